"""The encrypted policy file: round trips, refusals at startup, atomic and shared writes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inferflux_core.auth.policy_admin import KeyCreate, PolicyAdmin
from inferflux_core.contracts import Policy
from inferflux_core.errors import PolicyStoreError
from inferflux_plugins.policy import sealed
from inferflux_plugins.policy.encrypted import PASSPHRASE_ENV, EncryptedFilePolicyStore
from inferflux_plugins.policy.sealed import HEADER, MAGIC, KdfParams

PASSPHRASE = "a long and secret passphrase"
#: Cheap parameters for tests that do not measure the KDF itself.
FAST_KDF = KdfParams(log2_n=10, r=8, p=1)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sealed, "DEFAULT_KDF", FAST_KDF)
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "policy.bin"


@pytest.fixture
def store(path: Path) -> Iterator[EncryptedFilePolicyStore]:
    opened = EncryptedFilePolicyStore(path=str(path))
    yield opened
    opened.close()


def _create(store: EncryptedFilePolicyStore, name: str = "alice") -> str:
    return str(PolicyAdmin(store).create_key(KeyCreate(name=name))["key"])


def _refused(path: Path, match: str) -> PolicyStoreError:
    with pytest.raises(PolicyStoreError, match=match) as caught:
        EncryptedFilePolicyStore(path=str(path))
    assert str(path) in caught.value.message
    return caught.value


def test_round_trip_through_a_restart_at_full_kdf_cost(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sealed, "DEFAULT_KDF", KdfParams(17, 8, 1))
    first = EncryptedFilePolicyStore(path=str(path))
    key = _create(first)
    first.close()
    header = sealed.read_header(path.read_bytes())
    assert (header.params.log2_n, header.params.r, header.params.p) == (17, 8, 1)
    reopened = EncryptedFilePolicyStore(path=str(path))
    [record] = reopened.list_keys()
    assert record.name == "alice" and record.key_hash.endswith(
        hashlib.sha256(key.encode()).hexdigest()
    )
    assert reopened.read().version == first.read().version


def test_the_file_is_private_and_never_holds_the_key(
    store: EncryptedFilePolicyStore, path: Path
) -> None:
    key = _create(store)
    data = path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert data.startswith(MAGIC)
    for secret in (key, key.split(".")[1], "alice", hashlib.sha256(key.encode()).hexdigest()):
        assert secret.encode() not in data


def test_every_write_uses_a_fresh_nonce_and_a_higher_version(
    store: EncryptedFilePolicyStore, path: Path
) -> None:
    headers = []
    for name in ("a", "b", "c"):
        _create(store, name)
        headers.append(sealed.read_header(path.read_bytes()))
    assert len({h.nonce for h in headers}) == 3
    assert [h.policy_version for h in headers] == [2, 3, 4]
    assert len({h.salt for h in headers}) == 1  # the key is derived once per file


def test_a_wrong_passphrase_is_refused_at_startup(
    store: EncryptedFilePolicyStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _create(store)
    before = path.read_bytes()
    monkeypatch.setenv(PASSPHRASE_ENV, "not the passphrase")
    _refused(path, "passphrase is wrong, or the file was modified")
    assert path.read_bytes() == before


@pytest.mark.parametrize("where", ["header", "ciphertext", "tag"])
def test_one_flipped_byte_is_refused(
    store: EncryptedFilePolicyStore, path: Path, where: str
) -> None:
    _create(store)
    data = bytearray(path.read_bytes())
    # the header's salt, the middle of the ciphertext, the last byte of the tag
    offset = {"header": 20, "ciphertext": HEADER.size + 10, "tag": len(data) - 1}[where]
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    _refused(path, "refusing the policy file")
    assert path.read_bytes() == bytes(data), "a refused file must be left as it is"


@pytest.mark.parametrize("length", [0, 7, HEADER.size, HEADER.size + 15])
def test_a_truncated_file_is_refused(
    store: EncryptedFilePolicyStore, path: Path, length: int
) -> None:
    _create(store)
    path.write_bytes(path.read_bytes()[:length])
    _refused(path, "refusing the policy file")


def test_an_unknown_format_version_is_refused(store: EncryptedFilePolicyStore, path: Path) -> None:
    _create(store)
    data = bytearray(path.read_bytes())
    data[8:10] = (2).to_bytes(2, "big")
    path.write_bytes(bytes(data))
    _refused(path, "format version is 2; this inferflux reads version 1")


def test_a_header_asking_for_huge_kdf_cost_is_refused_before_scrypt(
    store: EncryptedFilePolicyStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _create(store)
    data = bytearray(path.read_bytes())
    data[11] = 30  # log2 N: 2^30 would need 1 TiB at r=8
    path.write_bytes(bytes(data))

    def scrypt_must_not_run(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("scrypt ran on capped parameters")

    monkeypatch.setattr(hashlib, "scrypt", scrypt_must_not_run)
    _refused(path, r"N=2\^30.*beyond the limits")
    for r_value in (64, 255):
        data[11], data[12] = 17, r_value
        path.write_bytes(bytes(data))
        _refused(path, "beyond the limits")


def test_the_default_kdf_is_owasps_with_maxmem_to_match() -> None:
    params = KdfParams(17, 8, 1)
    assert params.memory == 128 * 8 * (2**17 + 3)
    params.check()
    with pytest.raises(sealed.SealError):
        KdfParams(19, 8, 1).check()


def test_without_a_passphrase_the_store_refuses_to_open(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(PolicyStoreError, match=f"{PASSPHRASE_ENV} is not set"):
        EncryptedFilePolicyStore(path=str(path))
    assert not path.exists()


def test_an_encrypted_file_without_a_passphrase_is_refused_even_in_plaintext_mode(
    store: EncryptedFilePolicyStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _create(store)
    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(PolicyStoreError, match="it is encrypted"):
        EncryptedFilePolicyStore(path=str(path), allow_plaintext=True)


def test_plaintext_mode_warns_and_a_passphrase_then_refuses_the_plain_file(
    path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV)
    with caplog.at_level(logging.WARNING):
        plain = EncryptedFilePolicyStore(path=str(path), allow_plaintext=True)
    assert "UNENCRYPTED" in caplog.text
    _create(plain)
    assert json.loads(path.read_bytes())["format"] == "inferflux-policy"
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    _refused(path, "not a sealed inferflux policy file")


def test_a_writer_killed_before_the_rename_leaves_the_old_policy(
    store: EncryptedFilePolicyStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _create(store, "kept")
    before = path.read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError("simulated crash between write and rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(PolicyStoreError, match="cannot write the policy file"):
        _create(store, "lost")
    monkeypatch.undo()
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    monkeypatch.setattr(sealed, "DEFAULT_KDF", FAST_KDF)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    assert [r.name for r in store.list_keys()] == ["kept"]
    assert [r.name for r in EncryptedFilePolicyStore(path=str(path)).list_keys()] == ["kept"]


def test_an_older_file_put_back_is_detected(store: EncryptedFilePolicyStore, path: Path) -> None:
    _create(store, "first")
    old = path.read_bytes()
    _create(store, "second")
    path.write_bytes(old)
    with pytest.raises(PolicyStoreError, match="older copy was put in its place"):
        store.read()
    with pytest.raises(PolicyStoreError):
        _create(store, "third")


def test_changes_by_another_process_are_seen_on_the_next_read(
    store: EncryptedFilePolicyStore, path: Path
) -> None:
    other = EncryptedFilePolicyStore(path=str(path))
    _create(other, "from-elsewhere")
    assert [r.name for r in store.list_keys()] == ["from-elsewhere"]
    key_id = store.list_keys()[0].key_id
    PolicyAdmin(other).revoke_key(key_id)
    assert store.get_key(key_id) is not None and store.get_key(key_id).revoked  # type: ignore[union-attr]


WRITER = """
import sys
from inferflux_plugins.policy import sealed
sealed.DEFAULT_KDF = sealed.KdfParams(10, 8, 1)
from inferflux_core.auth.policy_admin import KeyCreate, PolicyAdmin
from inferflux_plugins.policy.encrypted import EncryptedFilePolicyStore
admin = PolicyAdmin(EncryptedFilePolicyStore(path=sys.argv[1]))
for i in range(int(sys.argv[3])):
    admin.create_key(KeyCreate(name=f"{sys.argv[2]}-{i}"))
"""


def test_concurrent_writers_in_two_processes_lose_no_key(
    store: EncryptedFilePolicyStore, path: Path
) -> None:
    n = 25
    env = {**os.environ, PASSPHRASE_ENV: PASSPHRASE}
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, str(n)], env=env, cwd=ROOT)
        for name in ("left", "right")
    ]
    assert [w.wait(timeout=90) for w in writers] == [0, 0]
    names = sorted(r.name for r in store.list_keys())
    assert names == sorted(f"{side}-{i}" for side in ("left", "right") for i in range(n))
    assert store.read().version == 1 + 2 * n


def test_the_memory_store_also_versions_its_policy() -> None:
    from inferflux_plugins.policy.memory import MemoryPolicyStore

    memory = MemoryPolicyStore()
    assert not memory.persistent
    PolicyAdmin(memory).create_key(KeyCreate(name="m"))
    assert memory.read().version == 1
    assert isinstance(memory.read(), Policy)


def _seen_file(path: Path) -> Path:
    return path.with_name(path.name + ".seen")


def test_a_rolled_back_file_is_refused_after_a_restart(path: Path) -> None:
    first = EncryptedFilePolicyStore(path=str(path))
    _create(first, "first")
    old = path.read_bytes()
    _create(first, "second")
    newest = path.read_bytes()
    first.close()
    assert json.loads(_seen_file(path).read_text())["version"] == 3
    assert stat.S_IMODE(_seen_file(path).stat().st_mode) == 0o600
    path.write_bytes(old)
    error = _refused(path, "holds version 2 but version 3 was already in use")
    assert str(_seen_file(path)) in error.message and error.status == 503
    path.write_bytes(newest)
    reopened = EncryptedFilePolicyStore(path=str(path))
    assert [r.name for r in reopened.list_keys()] == ["first", "second"]
    _create(reopened, "third")
    assert json.loads(_seen_file(path).read_text())["version"] == 4


def test_the_same_version_with_other_content_is_refused_after_a_restart(path: Path) -> None:
    store = EncryptedFilePolicyStore(path=str(path))
    _create(store, "one")
    path.with_name("copy").write_bytes(path.read_bytes())
    store.close()
    # Another file at the same version: genuine, but not the one recorded.
    other_dir = path.parent / "other"
    other_dir.mkdir()
    other = EncryptedFilePolicyStore(path=str(other_dir / path.name))
    _create(other, "two")
    path.write_bytes((other_dir / path.name).read_bytes())
    _refused(path, "holds version 2 but version 2 was already in use")


def test_deleting_the_policy_file_does_not_start_an_empty_policy(path: Path) -> None:
    store = EncryptedFilePolicyStore(path=str(path))
    _create(store)
    store.close()
    path.unlink()
    error = _refused(path, "is missing, but version 2 was already in use")
    assert not path.exists() and "delete the counter" in error.message


def test_a_damaged_counter_is_refused_and_deleting_it_is_the_documented_way_out(
    path: Path,
) -> None:
    store = EncryptedFilePolicyStore(path=str(path))
    _create(store)
    store.close()
    for damage in ("{", '{"format": "x"}', '{"format": "inferflux-policy-seen", "version": -1}'):
        _seen_file(path).write_text(damage)
        _refused(path, "rollback counter .* is damaged")
    _seen_file(path).unlink()  # the limit: without the counter an older file is accepted again
    assert [r.name for r in EncryptedFilePolicyStore(path=str(path)).list_keys()] == ["alice"]


async def _max_stall(work: Any) -> tuple[Any, float, float]:
    """Run ``work`` while a ticker measures the longest the event loop was blocked."""
    stalls = [0.0]
    done = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            stalls.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.02)
    started = time.perf_counter()
    try:
        result = await work
    finally:
        elapsed = time.perf_counter() - started
        done.set()
        await ticker
    return result, max(stalls), elapsed


def test_a_reload_needing_scrypt_runs_off_the_event_loop(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EncryptedFilePolicyStore(path=str(path))
    _create(store, "before")
    elsewhere = path.parent / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setattr(sealed, "DEFAULT_KDF", sealed.KdfParams(log2_n=17, r=8, p=1))
    other = EncryptedFilePolicyStore(path=str(elsewhere / "p.bin"))  # a new salt, full cost
    for name in ("a", "b", "c"):
        _create(other, name)
    path.write_bytes((elsewhere / "p.bin").read_bytes())
    policy, stall, elapsed = asyncio.run(_max_stall(store.read_async()))
    assert sorted(r.name for r in policy.keys.values()) == ["a", "b", "c"]
    assert elapsed > 0.1, "scrypt at full cost took no time: the test measures nothing"
    assert stall < min(0.15, elapsed / 2), (stall, elapsed)


def test_a_reload_waiting_for_the_lock_runs_off_the_event_loop(path: Path) -> None:
    from filelock import FileLock

    store = EncryptedFilePolicyStore(path=str(path))
    other = EncryptedFilePolicyStore(path=str(path))
    _create(other, "from-elsewhere")  # the store's copy is now stale
    held = FileLock(str(path) + ".lock", thread_local=False)
    held.acquire()
    updater = threading.Thread(target=_create, args=(store, "waiting"))
    updater.start()  # holds the store's own lock while it waits for the file lock
    threading.Timer(0.6, held.release).start()
    policy, stall, elapsed = asyncio.run(_max_stall(store.read_async()))
    updater.join(timeout=10)
    assert elapsed > 0.3 and stall < min(0.15, elapsed / 2), (stall, elapsed)
    assert "from-elsewhere" in {r.name for r in policy.keys.values()}
    assert {r.name for r in store.list_keys()} == {"from-elsewhere", "waiting"}


def test_an_unchanged_file_is_read_on_the_event_loop_without_a_thread(
    store: EncryptedFilePolicyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _create(store)

    def no_thread(*args: object, **kwargs: object) -> None:
        raise AssertionError("an unchanged file went to a worker thread")

    monkeypatch.setattr(asyncio, "to_thread", no_thread)
    assert asyncio.run(store.read_async()) is store.read()
