"""A model's validated options resolved into the settings of each upstream of its pool."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from inferflux_core.errors import ConfigError
from inferflux_plugins.backends.openai_upstream.options import (
    OpenAIUpstreamOptions,
    UpstreamOptions,
)
from inferflux_plugins.backends.openai_upstream.secrets import read_key


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """How to call one upstream. ``headers`` hold its credential: never log them."""

    index: int
    base_url: str
    model: str
    headers: Mapping[str, str]
    timeout: float
    connect_timeout: float
    first_byte_timeout: float
    max_concurrency: int

    @property
    def secret(self) -> str | None:
        """The key sent to it (to cut out of anything it sends back), if any."""
        value = self.headers.get("Authorization", "").removeprefix("Bearer ")
        return value or None

    @property
    def label(self) -> str:
        """How logs name it (its index and URL; never its key)."""
        return f"upstream {self.index} ({self.base_url})"

    def __repr__(self) -> str:  # the headers hold the key
        return f"UpstreamSettings({self.label}, model={self.model!r})"


def parse_options(model_name: str, options: Mapping[str, Any]) -> OpenAIUpstreamOptions:
    """Validate ``options``; a ConfigError names ``models.<name>.options.<key>`` and the
    problem (``models.<name>.options.upstreams.1.base_url: ...``)."""
    prefix = f"models.{model_name}.options"
    try:
        parsed = OpenAIUpstreamOptions.model_validate(dict(options))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in (prefix, *e['loc']))}: {e['msg']}" for e in exc.errors()
        )
        first = ".".join(str(p) for p in (prefix, *exc.errors()[0]["loc"]))
        raise ConfigError(f"invalid openai_upstream option {problems}", param=first) from None
    if (parsed.base_url is None) == (parsed.upstreams is None):
        raise ConfigError(
            f"{prefix}.base_url: Field required: set base_url (one upstream) or upstreams "
            "(a pool), not both",
            param=f"{prefix}.base_url",
        )
    read_key(prefix, parsed.api_key, parsed.api_key_env, parsed.api_key_file)  # "not both"
    return parsed


def resolve_pool(
    model_name: str, options: OpenAIUpstreamOptions, source: str
) -> list[UpstreamSettings]:
    """Each upstream's settings, its key read now (environment or file)."""
    prefix = f"models.{model_name}.options"
    pool_key = read_key(prefix, options.api_key, options.api_key_env, options.api_key_file)
    entries = options.upstreams or [UpstreamOptions(base_url=options.base_url or "")]
    upstreams = []
    for index, entry in enumerate(entries):
        key = read_key(f"{prefix}.upstreams.{index}", None, entry.api_key_env, entry.api_key_file)
        key = key if key is not None else pool_key
        headers = {**options.headers, **entry.headers}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        timeout = entry.timeout_seconds or options.timeout_seconds
        upstreams.append(
            UpstreamSettings(
                index=index,
                base_url=entry.base_url,
                model=entry.model or options.upstream_model or source,
                headers=headers,
                timeout=timeout,
                connect_timeout=(
                    entry.connect_timeout_seconds or options.connect_timeout_seconds or timeout
                ),
                first_byte_timeout=(
                    entry.first_byte_timeout_seconds
                    or options.first_byte_timeout_seconds
                    or timeout
                ),
                max_concurrency=entry.max_concurrency or options.max_concurrent,
            )
        )
    return upstreams
