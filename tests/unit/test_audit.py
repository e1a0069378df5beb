"""The audit log: one JSON line per request, hashes unless text is asked for, private files."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

from inferflux_core.audit import AuditLog
from inferflux_core.config import AuditConfig


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_prompt_and_response_are_hashed_by_default(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(AuditConfig(enabled=True, path=path))
    audit.write({"request_id": "r1", "key_id": "k1", "status": 200}, prompt="hi", response="hey")
    audit.close()
    [line] = _lines(path)
    assert line["request_id"] == "r1" and line["key_id"] == "k1" and line["status"] == 200
    assert line["prompt_sha256"] == hashlib.sha256(b"hi").hexdigest()
    assert line["response_sha256"] == hashlib.sha256(b"hey").hexdigest()
    assert "prompt" not in line and "response" not in line
    assert str(line["time"]).endswith("+00:00")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_record_text_keeps_the_text_too(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(AuditConfig(enabled=True, path=path, record_text=True))
    audit.write({"status": 200}, prompt="hi", response=None)
    audit.close()
    [line] = _lines(path)
    assert line["prompt"] == "hi" and "response_sha256" not in line


def test_the_file_rotates_and_two_logs_do_not_mix(tmp_path: Path) -> None:
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    one = AuditLog(AuditConfig(enabled=True, path=first, max_bytes=1024, backups=2))
    two = AuditLog(AuditConfig(enabled=True, path=second))
    for i in range(60):
        one.write({"n": i, "pad": "x" * 40}, prompt=None, response=None)
    two.write({"n": "other"}, prompt=None, response=None)
    one.close()
    two.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.log", "a.log.1", "a.log.2", "b.log"]
    assert _lines(second) == [{"time": _lines(second)[0]["time"], "n": "other"}]
    assert all(line["n"] != "other" for line in _lines(first))
