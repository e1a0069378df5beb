"""Projects: which models and adapters a caller may see (docs/projects.md).

A model or adapter with a ``project`` in config belongs to it; one without is unscoped. A key
with a ``project`` sees its project's models and unscoped ones; a key without one, a caller
with the ``admin`` scope, and every caller of a server with ``auth.mode: disabled`` see
everything. An adapter is visible only where its base model is too. To a caller that may not
see it, a model does not exist: it is absent from ``/v1/models``, and naming it is the same
404 ``model_not_found`` as naming a model that does not exist, listing only what the caller
sees.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from inferflux_core.auth.principal import Principal
from inferflux_core.auth.scopes import ADMIN
from inferflux_core.engine import adapters
from inferflux_core.errors import ModelNotFoundError

if TYPE_CHECKING:
    from inferflux_core.engine.adapters import Configured


def restricted(principal: Principal | None) -> bool:
    """True if ``principal`` sees only its project's models (and unscoped ones)."""
    return principal is not None and principal.project is not None and ADMIN not in principal.scopes


def sees(principal: Principal | None, projects: Iterable[str | None]) -> bool:
    """Whether ``principal`` may see something that belongs to every one of ``projects``."""
    if not restricted(principal):
        return True
    assert principal is not None
    return all(project is None or project == principal.project for project in projects)


class ProjectScope:
    """Project visibility over ``models`` (the engine's served models, by name)."""

    def __init__(self, models: Mapping[str, Configured] | None = None) -> None:
        self._models: Mapping[str, Configured] = models if models is not None else {}

    def visible(self, principal: Principal | None, name: str) -> bool:
        """Whether ``principal`` may see the model or ``BASE:ADAPTER`` called ``name``
        (an unknown name counts as visible: the engine's 404 answers it)."""
        found = adapters.resolve(self._models, name)
        if found is None:
            return True
        model, adapter = found
        return sees(principal, adapters.projects_of(model.config, adapter))

    def require_visible(self, principal: Principal | None, name: str) -> None:
        """404 model_not_found, as for a model that does not exist, unless ``principal`` may
        see ``name``; the message lists only the names it may see."""
        if not restricted(principal):
            return
        found = adapters.resolve(self._models, name)
        if found is not None and sees(principal, adapters.projects_of(found[0].config, found[1])):
            return
        raise ModelNotFoundError(
            f"the model {name!r} does not exist; available: {', '.join(self.names(principal))}",
            param="model",
        )

    def names(self, principal: Principal | None) -> Iterator[str]:
        """Every model and ``BASE:ADAPTER`` name ``principal`` may see."""
        for name, model in list(self._models.items()):
            config = model.config
            if not sees(principal, (config.project,)):
                continue
            yield name
            for adapter in config.adapters:
                if sees(principal, (adapter.project,)):
                    yield name + adapters.SEPARATOR + adapter.name
