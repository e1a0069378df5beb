"""Before serving: a development key on loopback, a refusal where nobody could call."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from inferflux_core.auth.access import AccessControl
from inferflux_core.auth.bootstrap import DEV_KEY_ENV, prepare_access
from inferflux_core.auth.keys import generate_key, hash_key
from inferflux_core.config import Settings
from inferflux_core.errors import ConfigError
from inferflux_core.plugins import PluginHost
from inferflux_plugins.policy import sealed
from inferflux_plugins.policy.encrypted import PASSPHRASE_ENV


@pytest.fixture(scope="module")
def plugins() -> PluginHost:
    return PluginHost()


def _access(plugins: PluginHost, **settings: object) -> AccessControl:
    return AccessControl.from_settings(Settings.model_validate(settings), plugins)


def test_loopback_with_an_empty_memory_store_gets_an_admin_key(
    plugins: PluginHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DEV_KEY_ENV, raising=False)
    access = _access(plugins)
    dev = prepare_access(access, "127.0.0.1")
    assert dev is not None and not dev.from_environment
    [record] = access.store.list_keys()
    assert record.roles == ("admin",) and record.key_hash == hash_key(dev.key)
    assert prepare_access(access, "127.0.0.1") is None  # a usable key exists now


def test_the_key_in_inferflux_api_key_is_adopted(
    plugins: PluginHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, key_id = generate_key()
    monkeypatch.setenv(DEV_KEY_ENV, key)
    access = _access(plugins)
    dev = prepare_access(access, "localhost")
    assert dev is not None and dev.from_environment and dev.key_id == key_id
    monkeypatch.setenv(DEV_KEY_ENV, "my-secret")
    with pytest.raises(ConfigError, match=DEV_KEY_ENV):
        prepare_access(_access(plugins), "::1")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com"])
def test_a_public_host_without_keys_or_oidc_refuses_to_start(
    plugins: PluginHost, host: str
) -> None:
    with pytest.raises(ConfigError, match="nobody could call this server"):
        prepare_access(_access(plugins), host)


def test_oidc_or_disabled_auth_need_no_key(
    plugins: PluginHost, caplog: pytest.LogCaptureFixture
) -> None:
    oidc = {"issuer": "https://idp.example", "audience": "a"}
    assert prepare_access(_access(plugins, auth={"oidc": oidc}), "0.0.0.0") is None
    with caplog.at_level(logging.WARNING):
        disabled = _access(plugins, auth={"mode": "disabled"})
    assert prepare_access(disabled, "0.0.0.0") is None
    assert "auth.mode is disabled" in caplog.text
    with pytest.raises(ConfigError):
        prepare_access(_access(plugins, auth={"dev_key": False}), "127.0.0.1")


def test_no_development_key_goes_into_a_persistent_store(
    plugins: PluginHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sealed, "DEFAULT_KDF", sealed.KdfParams(10, 8, 1))
    monkeypatch.setenv(PASSPHRASE_ENV, "p")
    policy = {"store": "encrypted_file", "options": {"path": str(tmp_path / "p.bin")}}
    access = _access(plugins, policy=policy)
    with pytest.raises(ConfigError, match="inferflux admin keys create"):
        prepare_access(access, "127.0.0.1")
    assert access.store.list_keys() == []
