"""Loading plugins and collecting the names they register.

One :class:`PluginHost` per engine (two engines in one process share nothing). Plugins come
from the ``inferflux`` entry-point group, bundled ones included, plus any passed in directly
(tests, embedding). Loading is all-or-nothing: a plugin that fails to import, targets another
hook contract version, or registers a name another plugin has, stops startup with an error
naming the plugin.

Every hook is called through pluggy's hook callers, one plugin's implementation at a time (a
subset hook caller holding that implementation and every hook wrapper), so a failure names its
plugin, hook wrappers run around each implementation, and ``INFERFLUX_TRACE_PLUGINS`` sees
every call. Hooks called after loading go through :meth:`PluginHost.call_each` (a failure stops
what is starting, naming the plugin and the hook), :meth:`PluginHost.notify` (a failure is
logged naming the plugin, and the caller carries on) or, for *decide* hooks,
:meth:`PluginHost.first_result` (the first answer other than ``None`` wins).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from inferflux_core import hookspecs
from inferflux_core.errors import InferfluxError, PluginError

log = logging.getLogger(__name__)

#: The register hooks, each a family of named factories.
FAMILIES = {
    "device_contexts": "register_device_contexts",
    "backends": "register_backends",
    "schedulers": "register_schedulers",
    "policy_stores": "register_policy_stores",
    "kv_transports": "register_kv_transports",
    "guardrails": "register_guardrails",
}

TRACE_ENV = "INFERFLUX_TRACE_PLUGINS"
#: The module attribute a plugin declares the hook contract version it targets with.
VERSION_ATTRIBUTE = "INFERFLUX_HOOKSPEC_VERSION"


@dataclass(slots=True)
class PluginRecord:
    """A loaded plugin: where it came from and what it registered."""

    name: str
    distribution: str
    version: str
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)
    #: The ``INFERFLUX_HOOKSPEC_VERSION`` the plugin declares; None if it declares none.
    hookspec_version: int | None = None


@dataclass(frozen=True, slots=True)
class Registration:
    """One factory and the plugin that registered it."""

    factory: Any
    plugin: str


class PluginHost:
    """Loads plugins and holds the factories they register, by family and name."""

    def __init__(
        self,
        *,
        autoload: bool = True,
        disable: Iterable[str] = (),
        extra_plugins: Iterable[tuple[str, object]] = (),
    ) -> None:
        self.manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.manager.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self._disabled = set(disable)
        self._trace = bool(os.environ.get(TRACE_ENV))
        if self._trace:
            self._enable_tracing()
        if autoload:
            self._load_entry_points()
        for name, plugin in extra_plugins:
            self.register(plugin, name=name)
        self.registry = self._collect_families()

    def register(
        self, plugin: object, *, name: str, distribution: str = "", version: str = ""
    ) -> None:
        """Register one plugin object or module under ``name``."""
        if name in self._disabled:
            log.info("plugin %s is disabled by config", name)
            return
        if self.manager.has_plugin(name):
            raise PluginError(f"plugin name {name!r} is registered twice")
        declared = check_hookspec_version(plugin, name, distribution, version)
        try:
            self.manager.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            raise PluginError(f"plugin {name!r} is invalid: {exc}") from exc
        hooks = sorted(impl.name for impl in self.manager.get_hookcallers(plugin) or [])
        self.records[name] = PluginRecord(name, distribution, version, hooks, {}, declared)

    def get(self, family: str, name: str) -> Any:
        """The factory registered as ``name`` in ``family``; PluginError if there is none."""
        entries = self.registry[family]
        if name not in entries:
            known = ", ".join(sorted(entries)) or "none"
            raise PluginError(f"no {family[:-1].replace('_', ' ')} named {name!r} (known: {known})")
        return entries[name].factory

    def names(self, family: str) -> list[str]:
        """Every name registered in ``family``."""
        return sorted(self.registry[family])

    def plugin_of(self, family: str, name: str) -> str:
        """The name of the plugin that registered ``name`` in ``family`` ("?" if none did)."""
        entry = self.registry.get(family, {}).get(name)
        return entry.plugin if entry is not None else "?"

    @property
    def hook(self) -> Any:
        """pluggy's hook relay: a whole hook in one call, without the per-plugin error naming
        of :meth:`call_each`, :meth:`notify` and :meth:`first_result`."""
        return self.manager.hook

    def call_each(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call every implementation of ``hook_name``; their answers in pluggy's order.

        An implementation that raises stops the call with a PluginError naming the plugin and
        the hook (used at startup, where a half-initialized plugin must not serve).
        """
        results = []
        for plugin_name, impl in self._implementations(hook_name):
            results.extend(self._call_naming(plugin_name, impl, hook_name, kwargs))
        return results

    def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call every implementation of ``hook_name``; one that raises is logged and skipped."""
        for plugin_name, impl in self._implementations(hook_name):
            try:
                self._call(impl, hook_name, kwargs)
            except Exception:
                log.exception(
                    "plugin %r failed in hook %s%s (ignored)",
                    plugin_name,
                    hook_name,
                    self._wrappers_note(hook_name),
                )

    def first_result(self, hook_name: str, **kwargs: Any) -> Any:
        """The first answer other than ``None`` to the *decide* hook ``hook_name``, in pluggy's
        order (``tryfirst`` / ``trylast`` honoured); None if no plugin answers.

        An implementation that raises an inferflux error (``ModelFileError``, ...) reports it
        as it is; any other exception is a PluginError naming the plugin and the hook.
        """
        for plugin_name, impl in self._implementations(hook_name):
            answer = self._call_naming(plugin_name, impl, hook_name, kwargs)
            if answer is not None:
                return answer
        return None

    def has_implementations(self, hook_name: str) -> bool:
        """Whether any loaded plugin implements ``hook_name``."""
        return bool(self._implementations(hook_name))

    def self_check(self) -> dict[str, list[str]]:
        """Every loaded plugin's problems: its ``self_check`` answer, or the exception it raised.

        Plugins that do not implement ``self_check`` map to an empty list.
        """
        problems: dict[str, list[str]] = {name: [] for name in self.records}
        for plugin_name, impl in self._implementations("self_check"):
            try:
                answers = self._call(impl, "self_check", {})
            except Exception as exc:
                answers = [[f"self_check raised {type(exc).__name__}: {exc}"]]
            for answer in answers:
                problems.setdefault(plugin_name, []).extend(str(p) for p in answer or ())
        return problems

    def _implementations(self, hook_name: str) -> list[tuple[str, Any]]:
        """The plugins implementing ``hook_name`` (not as a wrapper), in pluggy's call order."""
        caller = getattr(self.manager.hook, hook_name)
        impls = [i for i in caller.get_hookimpls() if not (i.wrapper or i.hookwrapper)]
        # pluggy calls the last registered first; keep that order.
        return [(self.manager.get_name(i.plugin) or "?", i) for i in reversed(impls)]

    def _call(self, impl: Any, hook_name: str, kwargs: dict[str, Any]) -> Any:
        """Call one implementation through pluggy, inside every wrapper of the hook: a list of
        its answers (none for ``None``), or for a *decide* hook the answer itself."""
        caller = getattr(self.manager.hook, hook_name)
        others = [
            other.plugin
            for other in caller.get_hookimpls()
            if other is not impl and not (other.wrapper or other.hookwrapper)
        ]
        return self.manager.subset_hook_caller(hook_name, remove_plugins=others)(**kwargs)

    def _call_naming(
        self, plugin_name: str, impl: Any, hook_name: str, kwargs: dict[str, Any]
    ) -> Any:
        """:meth:`_call`; an exception becomes a PluginError naming the plugin and the hook
        (an inferflux error a *decide* hook raises is its answer, and is kept as it is)."""
        try:
            return self._call(impl, hook_name, kwargs)
        except InferfluxError as exc:
            if not isinstance(exc, PluginError) and self._decides(hook_name):
                raise
            raise self._failure(plugin_name, hook_name, exc) from exc
        except Exception as exc:
            raise self._failure(plugin_name, hook_name, exc) from exc

    def _failure(self, plugin_name: str, hook_name: str, exc: Exception) -> PluginError:
        return PluginError(
            f"plugin {plugin_name!r} failed in hook {hook_name}"
            f"{self._wrappers_note(hook_name)}: {type(exc).__name__}: {exc}"
        )

    def _decides(self, hook_name: str) -> bool:
        spec = getattr(self.manager.hook, hook_name).spec
        return bool(spec is not None and spec.opts.get("firstresult"))

    def _wrappers_note(self, hook_name: str) -> str:
        """Which plugins' hook wrappers ran around the call, for an error message."""
        caller = getattr(self.manager.hook, hook_name)
        names = [
            self.manager.get_name(i.plugin) or "?"
            for i in caller.get_hookimpls()
            if i.wrapper or i.hookwrapper
        ]
        return f" (inside the hook wrappers of {', '.join(map(repr, names))})" if names else ""

    def _load_entry_points(self) -> None:
        for entry_point in importlib.metadata.entry_points(group=hookspecs.PROJECT_NAME):
            if entry_point.name in self._disabled:
                log.info("plugin %s is disabled by config", entry_point.name)
                continue
            dist = entry_point.dist
            dist_name = dist.metadata["Name"] if dist is not None else "?"
            dist_version = dist.version if dist is not None else "?"
            try:
                plugin = entry_point.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {entry_point.name!r} (from {dist_name} {dist_version}, "
                    f"{entry_point.value}) failed to load: {type(exc).__name__}: {exc}"
                ) from exc
            self.register(
                plugin, name=entry_point.name, distribution=dist_name, version=dist_version
            )

    def _collect_families(self) -> dict[str, dict[str, Registration]]:
        registry: dict[str, dict[str, Registration]] = {}
        for family, hook_name in FAMILIES.items():
            entries: dict[str, Registration] = {}
            for plugin_name, impl in self._implementations(hook_name):
                for answer in self._call_naming(plugin_name, impl, hook_name, {}):
                    self._add_entries(entries, family, plugin_name, answer or {})
            registry[family] = entries
        return registry

    def _add_entries(
        self,
        entries: dict[str, Registration],
        family: str,
        plugin_name: str,
        answer: dict[str, Any],
    ) -> None:
        for name, factory in answer.items():
            if name in entries:
                raise PluginError(
                    f"{family[:-1].replace('_', ' ')} name {name!r} is registered by "
                    f"both plugin {entries[name].plugin!r} and plugin {plugin_name!r}"
                )
            entries[name] = Registration(factory, plugin_name)
            record = self.records.get(plugin_name)
            if record is not None:
                record.registered.setdefault(family, []).append(name)

    def _enable_tracing(self) -> None:
        """Log every hook call: its name, arguments and plugins, then its result or error."""

        def before(hook_name: str, impls: Any, kwargs: Any) -> None:
            plugins = [i.plugin_name for i in impls]
            log.warning("hook %s(%s) -> plugins %s", hook_name, _arguments(kwargs), plugins)

        def after(outcome: Any, hook_name: str, impls: Any, kwargs: Any) -> None:
            plugins = [i.plugin_name for i in impls]
            if outcome.exception is not None:
                log.warning("hook %s in %s raised %r", hook_name, plugins, outcome.exception)
            else:
                log.warning("hook %s in %s returned %r", hook_name, plugins, outcome.get_result())

        self.manager.add_hookcall_monitoring(before, after)


def _arguments(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in kwargs.items())


def check_hookspec_version(
    plugin: object, name: str, distribution: str = "", version: str = ""
) -> int | None:
    """The hook contract version ``plugin`` declares, or None; PluginError if it is not ours."""
    declared = getattr(plugin, VERSION_ATTRIBUTE, None)
    if declared is None:
        return None
    if declared != hookspecs.HOOKSPEC_VERSION:
        origin = f" (from {distribution} {version})" if distribution else ""
        raise PluginError(
            f"plugin {name!r}{origin} targets inferflux hook contract version {declared!r}, "
            f"but this inferflux provides version {hookspecs.HOOKSPEC_VERSION}: "
            "install a release of the plugin made for this version"
        )
    return int(declared)
