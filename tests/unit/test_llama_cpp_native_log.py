"""llama.cpp's own output reaches ``logging`` truncated and rate limited, never raw stderr."""

from __future__ import annotations

import logging
import os
import time

import pytest

from inferflux_plugins.backends.llama_cpp.native_log import (
    MAX_CAPTURED_LINES,
    MAX_MESSAGE_CHARS,
    LogForwarder,
    captured_stderr,
    log,
)


def test_a_long_message_is_cut_with_a_note_of_its_length(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=log.name):
        LogForwarder().emit(logging.WARNING, "x" * 100_000)
    (record,) = caplog.records
    assert record.name == "inferflux_plugins.backends.llama_cpp.native"
    assert len(record.getMessage()) < MAX_MESSAGE_CHARS + 100
    assert f"{100_000 - MAX_MESSAGE_CHARS} more characters" in record.getMessage()


def test_a_flood_is_rate_limited_and_the_dropped_lines_are_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    forwarder = LogForwarder(per_second=2)
    with caplog.at_level(logging.WARNING, logger=log.name):
        for i in range(50):
            forwarder.emit(logging.WARNING, f"line {i}")
        assert [r.getMessage() for r in caplog.records] == ["line 0", "line 1"]
        time.sleep(0.6)
        forwarder.emit(logging.WARNING, "after")
    messages = [r.getMessage() for r in caplog.records]
    assert messages[2:] == ["48 llama.cpp log lines were dropped (rate limit)", "after"]


def test_stderr_written_by_c_code_is_captured_and_forwarded_bounded(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    grammar_dump = "".join(f"rule{i} ::= [a-z]\n" for i in range(40_000))
    forwarder = LogForwarder()
    with caplog.at_level(logging.WARNING, logger=log.name), captured_stderr(forwarder) as output:
        os.write(2, f"parse: error parsing grammar: bad\n\n{grammar_dump}".encode())
    assert output.total_bytes > len(grammar_dump)
    assert "error parsing grammar: bad" in output.text
    assert capfd.readouterr().err == ""
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "parse: error parsing grammar: bad"
    assert len(messages) == MAX_CAPTURED_LINES + 1
    assert "more lines not shown" in messages[-1]
    assert sum(len(m) for m in messages) < 4 * MAX_MESSAGE_CHARS


def test_records_logged_while_stderr_is_captured_are_not_captured_twice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    forwarder = LogForwarder()
    with caplog.at_level(logging.WARNING, logger=log.name), captured_stderr(forwarder):
        forwarder.emit(logging.WARNING, "from the log callback")
    assert [r.getMessage() for r in caplog.records] == ["from the log callback"]
