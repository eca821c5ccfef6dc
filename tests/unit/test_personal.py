"""How projections name identities and show sealed values (projections.personal), without a
store: an encrypted event names its identity by its subject even once its key is gone; rows
read back open their copies, or say they were erased; a plaintext store reads as before."""

from __future__ import annotations

import os

from projections.personal import (
    identity_name,
    metadata_name,
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


def test_an_encrypted_event_is_named_by_its_subject_even_when_erased() -> None:
    vault, _, key = vault_with_key()
    name = vault.index("SMS", "+46 700 000 001")
    state = {"channel": "SMS", "identity": "+46 700 000 001", "subject": name, "_key": key}
    assert identity_name(state, vault) == name
    assert identity_name({**state, "identity": None, "erased": True}, vault) == name
    # A contact's subject names no channel identity.
    assert identity_name({"subject": "c.abc", "identity": None}, vault) is None
    sealed = shown_identity(state, vault)
    assert sealed is not None and "46700000001" not in sealed
    assert vault.open_text(sealed) == "46700000001"  # shown normalised, as always


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
    meta = [{"metadata": metadata_name(vault, "order-1"), "metadata_shown": None}]
    assert open_metadata(vault, meta) == [{"metadata": None, "erased": True}]


def test_a_plaintext_store_reads_as_before() -> None:
    plain = v.plaintext()
    state = {"channel": "SMS", "identity": "+46 700 000 001"}
    assert identity_name(state, plain) == "46700000001"
    assert shown_identity(state, plain) == "46700000001"
    # Rows from before the copies (identity_shown NULL) show their identity column.
    rows = [{"identity": "46700000001", "identity_shown": None}]
    assert open_rows(plain, rows) == [{"identity": "46700000001"}]
    assert metadata_name(plain, "order-1") == "order-1"
    assert open_metadata(plain, [{"metadata": "order-1", "metadata_shown": None}]) == [
        {"metadata": "order-1"}
    ]
