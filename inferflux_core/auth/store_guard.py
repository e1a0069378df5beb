"""A policy-store plugin behind a fail-closed guard.

The policy decides who may call the server, so a store that breaks while serving must not
let requests through, nor answer with a bare 500: :class:`GuardedPolicyStore` turns any
unexpected exception from the plugin's ``read`` or ``update`` into a
:class:`~inferflux_core.errors.PolicyStoreError` (503, ``policy_store_unavailable``) and logs
it with the store's and the plugin's names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from inferflux_core.contracts import Policy, PolicyStore
from inferflux_core.errors import InferfluxError, PolicyStoreError

log = logging.getLogger(__name__)


class GuardedPolicyStore(PolicyStore):
    """Delegates to ``inner``; its unexpected failures become 503s naming the plugin."""

    def __init__(self, inner: PolicyStore, *, name: str, plugin: str) -> None:
        super().__init__()
        self.inner = inner
        self.name = name
        self.plugin = plugin
        self.persistent = inner.persistent  # type: ignore[misc]  # the wrapped store's answer

    def read(self) -> Policy:
        """The inner store's policy, or a 503 if it fails."""
        try:
            return self.inner.read()
        except InferfluxError:
            raise
        except Exception as exc:
            raise self._unavailable("read", exc) from None

    async def read_async(self) -> Policy:
        """The inner store's policy, read without blocking the event loop; 503 if it fails."""
        try:
            return await self.inner.read_async()
        except InferfluxError:
            raise
        except Exception as exc:
            raise self._unavailable("read", exc) from None

    def update(self, change: Callable[[Policy], Policy]) -> Policy:
        """The inner store's update; ``change``'s own exceptions pass through unchanged."""
        raised: list[BaseException] = []

        def tracked(policy: Policy) -> Policy:
            try:
                return change(policy)
            except BaseException as exc:
                raised.append(exc)
                raise

        try:
            return self.inner.update(tracked)
        except InferfluxError:
            raise
        except Exception as exc:
            if raised and exc is raised[0]:
                raise
            raise self._unavailable("update", exc) from None

    def close(self) -> None:
        """Close the inner store; a failure is logged, never raised."""
        try:
            self.inner.close()
        except Exception:
            log.exception("policy store %r (plugin %r) failed to close", self.name, self.plugin)

    def _unavailable(self, method: str, exc: Exception) -> PolicyStoreError:
        log.error(
            "policy store %r (plugin %r) failed in %s: %s: %s",
            self.name,
            self.plugin,
            method,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        return PolicyStoreError(
            f"the policy store {self.name!r} failed, so the request is refused; "
            "the server log has the details"
        )
