"""Conformance tests for policy stores (:class:`~inferflux_core.contracts.PolicyStore`).

Subclass :class:`PolicyStoreConformance`, set ``policy_store_name`` and
``policy_store_options``; ``{tmp}`` in an option's string value becomes a fresh directory for
each test (``{"path": "{tmp}/policy.bin"}``), so every test starts from an empty store and can
reopen it to check that the policy persists.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from inferflux_core.contracts import ApiKeyRecord, Policy, PolicyStore, RateLimits
from inferflux_core.errors import PolicyStoreError
from inferflux_core.testing.lookup import fill_tmp, plugin_factory
from inferflux_core.testing.settings import PluginSettings

StoreOpener = Callable[..., PolicyStore]
N_THREADS = 8
WRITES_PER_THREAD = 5


def key_record(n: int, name: str = "key") -> ApiKeyRecord:
    """A valid key record whose id and hash are derived from ``n``."""
    return ApiKeyRecord(
        key_id=f"{n:016x}",
        name=f"{name}-{n}",
        key_hash="sha256:" + f"{n:064x}",
        roles=("user",),
        created_at=float(n),
    )


class PolicyStoreConformance:
    """The policy-store contract as tests. Set ``policy_store_name``."""

    #: The name the store is registered under (``policy.store``).
    policy_store_name: ClassVar[str] = ""
    #: ``policy.options``; ``{tmp}`` in a string is replaced by a per-test directory.
    policy_store_options: ClassVar[dict[str, Any]] = {}

    @pytest.fixture(scope="class")
    @classmethod
    def policy_store_settings(cls) -> PluginSettings:
        """What to construct; override this fixture to compute it (the CLI options do)."""
        if not cls.policy_store_name:
            pytest.fail(f"{cls.__name__} must set policy_store_name")
        return PluginSettings(cls.policy_store_name, cls.policy_store_options)

    @pytest.fixture
    def open_store(
        self, policy_store_settings: PluginSettings, tmp_path: Path
    ) -> Iterator[StoreOpener]:
        """``open_store(**extra_options)``: a new instance over this test's data."""
        factory = plugin_factory("policy_stores", policy_store_settings.name)
        opened: list[PolicyStore] = []

        def open_(**extra: Any) -> PolicyStore:
            options = fill_tmp({**policy_store_settings.options, **extra}, tmp_path)
            store: PolicyStore = factory(**options)
            opened.append(store)
            return store

        yield open_
        for store in opened:
            store.close()

    @pytest.fixture
    def store(self, open_store: StoreOpener) -> PolicyStore:
        """A store over this test's (initially empty) data."""
        return open_store()

    def test_a_new_store_holds_an_empty_policy(self, store: PolicyStore) -> None:
        policy = store.read()
        assert isinstance(policy, Policy)
        assert policy.keys == {} and policy.roles == {}
        assert store.list_keys() == []

    def test_keys_are_created_read_replaced_and_deleted(self, store: PolicyStore) -> None:
        first, second = key_record(1), key_record(2)
        store.put_key(first)
        store.put_key(second)
        assert store.get_key(first.key_id) == first
        assert store.list_keys() == [first, second]
        revoked = first.model_copy(update={"revoked": True, "revoked_at": 5.0})
        store.put_key(revoked)
        assert store.get_key(first.key_id) == revoked
        store.update(lambda p: p.model_copy(update={"keys": {second.key_id: second}}))
        assert store.get_key(first.key_id) is None
        assert store.list_keys() == [second]

    def test_roles_and_default_limits_are_stored(self, store: PolicyStore) -> None:
        limits = RateLimits(requests_per_minute=60, tokens_per_minute=10_000)
        store.update(lambda p: p.with_role("reader", ["models:read"]))
        store.update(lambda p: p.with_default_limits(limits))
        policy = store.read()
        assert policy.roles == {"reader": ("models:read",)}
        assert policy.default_limits == limits
        store.update(lambda p: p.with_role("reader", None))
        assert store.read().roles == {}

    def test_every_update_raises_the_version_by_one(self, store: PolicyStore) -> None:
        start = store.read().version
        returned = store.put_key(key_record(1))
        assert returned.version == start + 1
        assert store.read() == returned
        store.update(lambda p: p)
        assert store.read().version == start + 2

    def test_read_async_answers_what_read_does(self, store: PolicyStore) -> None:
        store.put_key(key_record(1))
        assert asyncio.run(store.read_async()) == store.read()
        store.put_key(key_record(2))
        assert asyncio.run(store.read_async()).keys.keys() == {f"{1:016x}", f"{2:016x}"}

    def test_a_change_that_raises_stores_nothing(self, store: PolicyStore) -> None:
        store.put_key(key_record(1))
        before = store.read()

        def failing(policy: Policy) -> Policy:
            raise RuntimeError("refused by the change")

        with pytest.raises(RuntimeError, match="refused by the change"):
            store.update(failing)
        assert store.read() == before

    def test_a_change_that_returns_no_policy_stores_nothing(self, store: PolicyStore) -> None:
        store.put_key(key_record(1))
        before = store.read()
        with pytest.raises(Exception):  # noqa: B017 - any refusal will do; storing it will not
            store.update(lambda policy: {"keys": "not a policy"})  # type: ignore[arg-type,return-value]
        assert store.read() == before

    def test_unknown_options_are_refused_with_type_error(self, open_store: StoreOpener) -> None:
        with pytest.raises(TypeError):
            open_store(no_such_option_xyz=1)

    def test_concurrent_writers_lose_no_update(self, store: PolicyStore) -> None:
        start = store.read().version
        self._write_concurrently([store] * N_THREADS)
        policy = store.read()
        assert len(policy.keys) == N_THREADS * WRITES_PER_THREAD
        assert policy.version == start + N_THREADS * WRITES_PER_THREAD

    def test_the_policy_outlives_the_store(self, open_store: StoreOpener) -> None:
        first = open_store()
        if not first.persistent:
            pytest.skip(f"{type(first).__name__}.persistent is False")
        first.put_key(key_record(1))
        saved = first.read()
        first.close()
        assert open_store().read() == saved

    def test_a_keys_project_is_stored(self, open_store: StoreOpener) -> None:
        first = open_store()
        scoped = key_record(1).model_copy(update={"project": "team-a"})
        first.put_key(scoped)
        assert first.get_key(scoped.key_id) == scoped
        if not first.persistent:
            return
        first.close()
        assert open_store().get_key(scoped.key_id) == scoped

    def test_two_instances_see_each_others_writes_and_lose_none(
        self, open_store: StoreOpener
    ) -> None:
        first = open_store()
        if not first.persistent:
            pytest.skip(f"{type(first).__name__}.persistent is False")
        second = open_store()
        first.put_key(key_record(1))
        assert second.get_key(key_record(1).key_id) == key_record(1)
        start = first.read().version
        self._write_concurrently([first, second] * (N_THREADS // 2))
        for store in (first, second):
            assert len(store.read().keys) == 1 + N_THREADS * WRITES_PER_THREAD
            assert store.read().version == start + N_THREADS * WRITES_PER_THREAD

    def test_truncated_data_is_refused_not_replaced(
        self, open_store: StoreOpener, tmp_path: Path
    ) -> None:
        first = open_store()
        if not first.persistent:
            pytest.skip(f"{type(first).__name__}.persistent is False")
        first.put_key(key_record(1))
        first.close()
        files = [p for p in tmp_path.rglob("*") if p.is_file() and p.stat().st_size > 0]
        if not files:
            pytest.skip("the store keeps no data under its {tmp} directory")
        for path in files:  # as a crash in the middle of a careless write would leave them
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
        with pytest.raises(PolicyStoreError):
            open_store()

    @staticmethod
    def _write_concurrently(stores: list[PolicyStore]) -> None:
        """Each store in its own thread adds ``WRITES_PER_THREAD`` keys of its own."""
        barrier = threading.Barrier(len(stores))
        errors: list[BaseException] = []

        def write(index: int, store: PolicyStore) -> None:
            try:
                barrier.wait()
                for j in range(WRITES_PER_THREAD):
                    store.put_key(key_record(1000 + index * WRITES_PER_THREAD + j))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=item) for item in enumerate(stores)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
