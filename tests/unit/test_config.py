"""Configuration: defaults, YAML, environment overrides, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from inferflux_core.config import DEFAULT_MODEL_SOURCE, Settings, load_config
from inferflux_core.errors import ConfigError


def test_defaults_serve_the_embedded_model() -> None:
    settings = load_config()
    assert [m.source for m in settings.models] == [DEFAULT_MODEL_SOURCE]
    assert settings.server.host == "127.0.0.1"


def test_yaml_file_then_environment_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "server.yaml"
    config.write_text("server:\n  port: 9001\n  log_level: debug\nscheduler:\n  token_budget: 99\n")
    settings = load_config(config)
    assert settings.server.port == 9001 and settings.scheduler.token_budget == 99
    monkeypatch.setenv("INFERFLUX_SERVER__PORT", "9002")
    settings = load_config(config)
    assert settings.server.port == 9002
    assert settings.server.log_level == "debug"


def test_models_from_environment_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERFLUX_MODELS", '[{"name": "m1", "source": "/x.gguf"}]')
    assert [m.name for m in load_config().models] == ["m1"]


def test_invalid_value_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("models:\n  - name: m\n    context_length: -5\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert "models.0.context_length" in caught.value.message


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("server:\n  prot: 80\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert "server.prot" in caught.value.message


def test_environment_value_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERFLUX_SERVER__PORT", "not-a-port")
    with pytest.raises(ConfigError) as caught:
        load_config()
    assert "server.port" in caught.value.message


def test_broken_yaml_and_missing_file_are_clear(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("server: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")


def test_duplicate_model_names_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERFLUX_MODELS", '[{"name": "a"}, {"name": "a"}]')
    with pytest.raises(ConfigError, match="unique"):
        load_config()


def test_security_defaults_are_on_and_strict() -> None:
    settings = load_config()
    assert settings.auth.mode == "keys" and settings.auth.dev_key
    assert not settings.auth.public_metrics and settings.auth.oidc is None
    assert settings.policy.store == "memory"
    assert settings.guardrails == [] and not settings.audit.enabled


def test_the_policy_passphrase_variable_is_not_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERFLUX_POLICY_PASSPHRASE", "secret")
    monkeypatch.setenv("INFERFLUX_API_KEY", "ifx-0123456789abcdef." + "a" * 43)
    settings = load_config()
    assert "secret" not in settings.model_dump_json()


def test_security_sections_from_yaml(tmp_path: Path) -> None:
    config = tmp_path / "server.yaml"
    config.write_text(
        "auth:\n  mode: disabled\n  oidc:\n    issuer: https://idp.example\n    audience: a\n"
        "policy:\n  store: encrypted_file\n  options: {path: /tmp/p.bin}\n"
        "rate_limits: {requests_per_minute: 60}\n"
        "guardrails:\n  - name: blocklist\n    options: {terms: [x]}\n"
        "audit: {enabled: true, path: /tmp/a.log}\n"
    )
    settings = load_config(config)
    assert settings.auth.oidc is not None and settings.auth.oidc.algorithms == ["RS256", "ES256"]
    assert settings.rate_limits.requests_per_minute == 60
    assert settings.guardrails[0].name == "blocklist"
    config.write_text("auth:\n  oidc:\n    issuer: x\n    audience: y\n    algorithms: [HS256]\n")
    with pytest.raises(ConfigError, match=r"auth\.oidc\.algorithms"):
        load_config(config)


def test_the_responses_store_is_bounded_as_the_config_says() -> None:
    from inferflux_core.bootstrap import response_store

    settings = Settings.model_validate(
        {"responses": {"store_max_entries": 3, "store_max_bytes": 4096, "store_ttl_seconds": 9}}
    )
    store = response_store(settings.responses)
    assert (store.max_entries, store.max_bytes, store.ttl_seconds) == (3, 4096, 9)
    assert store.max_entries_per_owner == 256
    with pytest.raises(ValidationError):
        Settings.model_validate({"responses": {"store_ttl_seconds": -1}})
