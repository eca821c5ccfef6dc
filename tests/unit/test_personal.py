"""How projections name identities and show personal values (projections.personal), without a
store: an encrypted event names its identity by its subject even once its key is gone; rows
hold references to their events (or, projected earlier, sealed copies) and read back opened,
or say they were erased; a plaintext store reads as before."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from projections.log_reader import CONSENT_REPORTED, LoggedEvent
from projections.personal import (
    identity_name,
    open_metadata,
    open_rows,
    shown_identity,
)
from store import vault as v
from store.vault import Secrets, Vault
from tests.unit.test_vault import MemoryKeys


def vault_with_key() -> tuple[Vault, MemoryKeys, str]:
    keys = MemoryKeys()
    vault = Vault(Secrets(os.urandom(32), os.urandom(32)), keys)
    key_id, _ = vault.key_for("b.x", v.MESSAGES, "2026-12")
    (row,) = vault.pending([key_id])
    keys.wrapped[row.key_id] = row.wrapped
    vault.confirm([row])
    return vault, keys, key_id.hex()


class MemoryEvents:
    """Decoded event states by notification id, as store.data_keys.SQLEventSource gives them."""

    def __init__(self) -> None:
        self.states_by_id: dict[int, Mapping[str, object]] = {}

    def states(self, vault: Vault, ids: Sequence[int]) -> dict[int, Mapping[str, object]]:
        return {i: self.states_by_id[i] for i in ids if i in self.states_by_id}


def test_an_encrypted_event_is_named_by_its_subject_even_when_erased() -> None:
    vault, _, key = vault_with_key()
    vault.sources = events = MemoryEvents()
    name = vault.index("SMS", "+46 700 000 001")
    state = {"channel": "SMS", "identity": "+46 700 000 001", "subject": name, "_key": key}
    assert identity_name(state, vault) == name
    assert identity_name({**state, "identity": None, "erased": True}, vault) == name
    # A contact's subject names no channel identity.
    assert identity_name({"subject": "c.abc", "identity": None}, vault) is None
    # Read from its public part only, the event still gives a reference to show it by.
    public = {"channel": "SMS", "subject": name, "_key": key}
    shown = shown_identity(LoggedEvent(7, CONSENT_REPORTED, "s", public), vault)
    assert shown == v.reference(7, v.IDENTITY) and "46700000001" not in shown
    events.states_by_id[7] = state
    assert vault.open_text(shown) == "46700000001"  # shown normalised, as always
    events.states_by_id[7] = {**state, "identity": None, "erased": True}
    assert vault.open_text(shown) is v.ERASED
    del events.states_by_id[7]
    assert vault.open_text(shown) is v.ERASED


def test_rows_open_their_copies_or_say_erased() -> None:
    vault, keys, key = vault_with_key()
    name = vault.index("SMS", "46700000001")
    copy = vault.seal_text(key, "46700000001")
    text = vault.seal_text(key, "please stop")
    rows = [
        {"identity": name, "identity_shown": copy, "text": text},
        {"identity": "", "identity_shown": "", "text": None},  # the contact's whole channel
    ]
    assert open_rows(vault, rows, texts=("text",)) == [
        {"identity": "46700000001", "text": "please stop"},
        {"identity": "", "text": None},
    ]
    keys.wrapped.clear()
    vault.forget(everything=True)
    assert open_rows(vault, rows, texts=("text",))[0] == {
        "identity": None,
        "text": None,
        "erased": True,
    }
    meta = [{"metadata": vault.metadata_name("order-1"), "metadata_shown": None}]
    assert open_metadata(vault, meta) == [{"metadata": None, "erased": True}]


def test_a_plaintext_store_reads_as_before() -> None:
    plain = v.plaintext()
    state = {"channel": "SMS", "identity": "+46 700 000 001"}
    assert identity_name(state, plain) == "46700000001"
    assert shown_identity(LoggedEvent(1, CONSENT_REPORTED, "s", state), plain) == "46700000001"
    # Rows from before the copies (identity_shown NULL) show their identity column.
    rows = [{"identity": "46700000001", "identity_shown": None}]
    assert open_rows(plain, rows) == [{"identity": "46700000001"}]
    assert plain.metadata_name("order-1") == "order-1"
    assert open_metadata(plain, [{"metadata": "order-1", "metadata_shown": None}]) == [
        {"metadata": "order-1"}
    ]
