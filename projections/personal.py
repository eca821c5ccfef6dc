"""How the read tables hold personal values (see store.vault).

A channel identity is held by its name: a keyed blind index in an encrypted store, the
normalised identity in a plaintext one (`Vault.index`). What a row shows people is, in a column
of its own, a reference to the event it came from, opened when shown: destroying that event's
key (erasure, retention) makes it unreadable there too."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from domain.identity import normalise
from projections.log_reader import LoggedEvent
from store.envelope import METADATA_INDEX
from store.vault import (
    IDENTITY,
    METADATA_FIELD,
    REFERRED,
    TEXT,
    Erased,
    Vault,
    reference,
)

# The subject prefix of a channel identity's blind index (store.vault.Vault.index).
IDENTITY_SUBJECT = "b."


def identity_name(state: Mapping[str, Any], vault: Vault) -> str | None:
    """The name of the channel identity an event is about (an encrypted event's subject)."""
    subject = state.get("subject")
    if isinstance(subject, str):
        return subject if subject.startswith(IDENTITY_SUBJECT) else None
    identity = state.get("identity")
    if not isinstance(identity, str) or not identity.strip():
        return None
    return vault.index(state.get("channel"), identity)


def shown_identity(event: LoggedEvent, vault: Vault) -> str | None:
    """What a row holds to show the event's identity: a reference to the event in an encrypted
    store, else the identity normalised; None when it has none."""
    state = event.state
    if vault.encrypted:
        named = identity_name(state, vault) is not None
        return reference(event.notification_id, IDENTITY) if named else None
    identity = state.get("identity")
    if not isinstance(identity, str) or not identity.strip():
        return None
    return normalise(state.get("channel"), identity)


def shown_text(event: LoggedEvent, vault: Vault, field: str = TEXT) -> str | None:
    """What a row holds to show a personal text field of the event (TEXT or METADATA_FIELD):
    a reference in an encrypted store, else the value; None when it has none."""
    value = event.state.get(REFERRED[field])
    # Read from its public part alone, an event names its metadata by METADATA_INDEX.
    named = field == METADATA_FIELD and event.state.get(METADATA_INDEX) is not None
    if vault.encrypted and (isinstance(value, str) or named):
        return reference(event.notification_id, field)
    return value if isinstance(value, str) else None


# What a shown value reads as where its key was destroyed, in table and CSV output.
ERASED_TEXT = "[erased]"


def open_rows(
    vault: Vault, rows: Sequence[dict[str, Any]], texts: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Rows as shown: `identity` replaced by its opened `identity_shown` (dropped), and each
    field in `texts` opened in place, with one key query. A value whose key was destroyed reads
    as None, with `"erased": True`. A plaintext row without a copy shows its identity."""
    out = [dict(row) for row in rows]
    slots: list[tuple[int, str]] = []
    values: list[str | None] = []
    for i, row in enumerate(out):
        if "identity_shown" in row:
            copy = row.pop("identity_shown")
            if copy is None and not vault.encrypted:
                continue
            if copy is None and row.get("identity"):
                row["identity"] = None
                row["erased"] = True
                continue
            slots.append((i, "identity"))
            values.append(copy)
        for field in texts:
            if row.get(field) is not None:
                slots.append((i, field))
                values.append(row[field])
    for (i, field), value in zip(slots, vault.open_texts(values), strict=True):
        if isinstance(value, Erased):
            out[i][field] = None
            out[i]["erased"] = True
        else:
            out[i][field] = value
    for row in out:
        for field in texts:
            if row.get("erased") and row.get(field) == "":  # erased before it was copied
                row[field] = None
    return out


def open_map(vault: Vault, shown: Mapping[str, str | None]) -> dict[str, str | None]:
    """A message's names -> identities as shown (None where erased)."""
    names = list(shown)
    opened = vault.open_texts([shown[n] for n in names])
    return {n: (None if isinstance(v, Erased) else v) for n, v in zip(names, opened, strict=True)}


def open_metadata(vault: Vault, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """message_status rows with `metadata` as shown: `metadata_shown` (dropped) opened in an
    encrypted store, with `"erased": True` when its key is gone."""
    out = [dict(row) for row in rows]
    copies = [row.pop("metadata_shown", None) for row in out]
    if not vault.encrypted:
        return out
    opened = vault.open_texts(copies)
    for row, copy, value in zip(out, copies, opened, strict=True):
        if row.get("metadata") is None:
            continue
        if copy is None or isinstance(value, Erased):
            row["metadata"] = None
            row["erased"] = True
        else:
            row["metadata"] = value
    return out
