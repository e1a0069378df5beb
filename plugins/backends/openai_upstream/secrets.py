"""An upstream's API key, read once at startup from config, the environment or a file.

The key is returned to the caller only; every error names the option and the variable or the
file, never the value.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import SecretStr

from inferflux_core.errors import ConfigError

#: Bytes of a key file read at most (a key is one short line).
MAX_KEY_FILE_BYTES = 16 * 1024


def read_key(key: str, inline: SecretStr | None, env: str | None, file: Path | None) -> str | None:
    """The key from ``inline``, environment variable ``env`` or ``file`` (at most one is set);
    None if none is. ``key`` is the option path errors name (``models.m.options``)."""
    sources = (("api_key", inline), ("api_key_env", env), ("api_key_file", file))
    given = [name for name, value in sources if value is not None]
    if len(given) > 1:
        raise ConfigError(
            f"{key}: set one of {' and '.join(given)}, not both", param=f"{key}.{given[1]}"
        )
    if inline is not None:
        return inline.get_secret_value()
    if env is not None:
        value = os.environ.get(env, "")
        if not value:
            raise ConfigError(
                f"{key}.api_key_env: the environment variable {env} is not set",
                param=f"{key}.api_key_env",
            )
        return value
    if file is not None:
        return _key_file(f"{key}.api_key_file", file)
    return None


def _key_file(param: str, path: Path) -> str:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"{param}: cannot read {path} ({exc.strerror or type(exc).__name__})", param=param
        ) from None
    if len(raw) > MAX_KEY_FILE_BYTES:
        raise ConfigError(f"{param}: {path} is larger than a key file can be", param=param)
    try:
        value = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{param}: {path} is not UTF-8 text", param=param) from None
    if not value:
        raise ConfigError(f"{param}: {path} is empty", param=param)
    if any(c in value for c in "\r\n\0") or not value.isprintable():
        raise ConfigError(f"{param}: {path} must hold one line: the key", param=param)
    return value
