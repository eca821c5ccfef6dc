"""The vault's keys and names (store.vault), without a store."""

from __future__ import annotations

import base64
import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from store import vault as v
from store.vault import ERASED, Secrets, SecretsError, Vault


class MemoryKeys:
    def __init__(self) -> None:
        self.wrapped: dict[bytes, bytes] = {}

    def load(self, key_ids: Sequence[bytes]) -> dict[bytes, bytes]:
        return {k: self.wrapped[k] for k in key_ids if k in self.wrapped}


def pair() -> dict[str, str]:
    return dict(line.split("=", 1) for line in v.generate().splitlines())


def test_secrets_from_the_environment_or_a_key_file(tmp_path: Path) -> None:
    env = pair()
    secrets = Secrets.from_env(env)
    assert secrets is not None and len(secrets.master) == len(secrets.index) == 32
    assert "<hidden>" in repr(secrets) and env[v.MASTER] not in repr(secrets)
    key_file = tmp_path / "keys"
    v.write_key_file(key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert Secrets.from_env({"LEDGER_KEY_FILE": str(key_file)}) is not None
    with pytest.raises(FileExistsError):
        v.write_key_file(key_file)  # never replaces one
    assert Secrets.from_env({}) is None
    with pytest.raises(SecretsError, match="LEDGER_INDEX_KEY is missing"):
        Secrets.from_env({v.MASTER: env[v.MASTER]})
    with pytest.raises(SecretsError, match="32 random bytes"):
        Secrets.from_env({**env, v.MASTER: base64.b64encode(b"short").decode()})
    with pytest.raises(SecretsError, match="not base64"):
        Secrets.from_env({**env, v.INDEX: "not base64!"})
    with pytest.raises(SecretsError, match="LEDGER_KEY_FILE"):
        Secrets.from_env({"LEDGER_KEY_FILE": str(tmp_path / "missing")})


def test_blind_indexes_name_a_normalised_identity_per_channel() -> None:
    vault = Vault(Secrets(os.urandom(32), os.urandom(32)), MemoryKeys())
    name = vault.index("SMS", "+46 70-011 1222")
    assert name == vault.index("sms", "46700111222") and name.startswith("b.")
    assert "46700111222" not in name and len(name) == 24
    assert vault.index("WHATSAPP", "46700111222") != name
    other = Vault(Secrets(os.urandom(32), os.urandom(32)), MemoryKeys())
    assert other.index("SMS", "46700111222") != name
    plain = v.plaintext()
    assert plain.index("SMS", "+46 70-011 1222") == "46700111222"


def test_sealed_text_opens_until_its_key_is_destroyed() -> None:
    keys = MemoryKeys()
    vault = Vault(Secrets(os.urandom(32), os.urandom(32)), keys)
    key_id, _ = vault.key_for("b.x", v.CONSENT, "2026-12")
    assert vault.key_for("b.x", v.CONSENT, "2026-12")[0] == key_id  # reused
    assert vault.key_for("b.x", v.MESSAGES, "2026-12")[0] != key_id  # per class
    (row,) = vault.pending([key_id])
    keys.wrapped[row.key_id] = row.wrapped
    vault.confirm([row])
    assert vault.pending([key_id]) == []
    sealed = vault.seal_text(key_id.hex(), "STOP ✓")
    assert sealed is not None and sealed.startswith(v.TEXT_PREFIX) and "STOP" not in sealed
    reader = Vault(vault.secrets, keys)  # another process
    assert reader.open_texts([sealed, None, "plain"]) == ["STOP ✓", None, "plain"]
    keys.wrapped.clear()
    assert reader.open_text(sealed) == "STOP ✓"  # trusted for a while (KEY_TRUST_S) ...
    reader.forget(["b.x"])  # ... or until it learns of the erasure
    assert reader.open_text(sealed) is ERASED
    assert str(ERASED) == "[erased]" and not ERASED


def test_a_wrapped_key_needs_the_master_key() -> None:
    keys = MemoryKeys()
    vault = Vault(Secrets(os.urandom(32), os.urandom(32)), keys)
    key_id, aead = vault.key_for("b.y", v.MESSAGES, "2026-12")
    (row,) = vault.pending([key_id])
    keys.wrapped[row.key_id] = row.wrapped
    blob = vault.encrypt(key_id, aead, b"secret")
    wrong = Vault(Secrets(os.urandom(32), vault.secrets.index), keys)  # type: ignore[union-attr]
    with pytest.raises(SecretsError, match="cannot be unwrapped"):
        wrong.decrypt(blob)
    rotated = Vault(Secrets(os.urandom(32), os.urandom(32), (vault.secrets.master,)), keys)  # type: ignore[union-attr]
    assert rotated.decrypt(blob) == b"secret"


def test_a_key_whose_commit_failed_is_never_used_again() -> None:
    """Re-inserting a key after a failed (or unanswered) commit could bring back a key that
    an erasure deleted meanwhile: the slot gets a new key instead."""
    vault = Vault(Secrets(os.urandom(32), os.urandom(32)), MemoryKeys())
    first, _ = vault.key_for("b.z", v.MESSAGES, "2026-12")
    vault.abandon(vault.pending([first]))
    assert vault.pending([first]) == []
    second, _ = vault.key_for("b.z", v.MESSAGES, "2026-12")
    assert second != first


def test_an_evicted_pending_key_is_not_used_again() -> None:
    vault = Vault(Secrets(os.urandom(32), os.urandom(32)), MemoryKeys(), cache_size=2)
    first, _ = vault.key_for("b.1", v.MESSAGES, "2026-12")
    vault.key_for("b.2", v.MESSAGES, "2026-12")
    vault.key_for("b.1", v.MESSAGES, "2026-12")  # keeps b.1's slot recent
    vault.key_for("b.3", v.MESSAGES, "2026-12")  # evicts the oldest pending key: b.1's
    assert vault.pending([first]) == []
    assert vault.key_for("b.1", v.MESSAGES, "2026-12")[0] != first


def test_key_ids_start_with_their_creation_time_and_differ_after_it() -> None:
    """So the key table's primary key grows at its end; the rest of an id is random."""
    vault = Vault(Secrets(os.urandom(32), os.urandom(32)), MemoryKeys())
    before = int(time.time() * 1000)
    ids = [vault.key_for(f"b.{i}", v.MESSAGES, "2026-12")[0] for i in range(200)]
    after = int(time.time() * 1000)
    stamps = [int.from_bytes(k[:6], "big") for k in ids]
    assert all(len(k) == v.KEY_ID_BYTES for k in ids)
    assert before <= stamps[0] and stamps == sorted(stamps) and stamps[-1] <= after
    assert len({k[6:] for k in ids}) == len(ids)


def test_a_wrapped_key_is_bound_to_its_id_and_the_older_form_still_opens() -> None:
    """A data key is wrapped with the last 12 bytes of its id as nonce and its id as
    associated data, so the row stores only ciphertext and tag; rows written before that
    store their nonce in front of them and still open."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    keys = MemoryKeys()
    secrets = Secrets(os.urandom(32), os.urandom(32))
    vault = Vault(secrets, keys)
    key_id, key = vault.key_for("b.w", v.MESSAGES, "2026-12")
    (row,) = vault.pending([key_id])
    assert len(row.wrapped) == v.KEY_BYTES + v.TAG_BYTES
    blob = vault.encrypt(key_id, key, b"secret")
    other_id, _ = vault.key_for("b.v", v.MESSAGES, "2026-12")
    (other,) = vault.pending([other_id])
    keys.wrapped[key_id] = other.wrapped  # a row's wrapped key moved onto another id
    with pytest.raises(SecretsError, match="cannot be unwrapped"):
        Vault(secrets, keys).decrypt(blob)
    nonce = os.urandom(v.NONCE_BYTES)  # the older form: nonce, then ciphertext and tag
    keys.wrapped[key_id] = nonce + AESGCM(secrets.master).encrypt(nonce, key, key_id)
    assert Vault(secrets, keys).decrypt(blob) == b"secret"
    keys.wrapped[key_id] = row.wrapped
    assert Vault(secrets, keys).decrypt(blob) == b"secret"
