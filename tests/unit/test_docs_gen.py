"""The hook reference is generated from docstrings, every hook and contract method has one, and
the committed ``docs/hooks.md`` is what the generator makes."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferflux_core import docs_gen
from inferflux_core.contracts import backend

REPO = Path(__file__).resolve().parents[2]


def test_every_hook_and_public_contract_method_has_a_docstring() -> None:
    assert docs_gen.missing_docstrings() == []


def test_committed_hook_reference_is_up_to_date() -> None:
    committed = (REPO / "docs" / "hooks.md").read_text(encoding="utf-8")
    assert committed == docs_gen.render(), (
        f"docs/hooks.md is out of date: run `{docs_gen.REGENERATE}` and commit the result"
    )


def test_reference_lists_every_hook_and_contract_method() -> None:
    text = docs_gen.render()
    for hook in ("register_backends", "on_request_finished", "self_check", "register_routes"):
        assert f"### `{hook}(" in text
    assert "**`decode(chunks: Sequence[SequenceChunk]) -> dict[int, int]`**" in text
    assert "**`check_input(request: GuardrailInput) -> GuardrailVerdict  (async)`**" in text
    assert "| `prefill_chunk` | `int` |" in text
    assert "`options_model`" in text


def test_a_contract_method_without_a_docstring_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def tokenize(self: object, text: str) -> list[int]:
        return []

    monkeypatch.setattr(backend.StepBackend, "tokenize", tokenize)
    assert docs_gen.missing_docstrings() == [
        "method inferflux_core.contracts.backend.StepBackend.tokenize"
    ]


def test_check_mode_fails_on_a_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "hooks.md"
    stale.write_text("# old\n", encoding="utf-8")
    guide = tmp_path / "bundled-plugins.md"
    guide.write_text(
        "<!-- keys: continuous -->\n| key | default | meaning |\n|---|---|---|\n", encoding="utf-8"
    )
    paths = ["--output", str(stale), "--bundled", str(guide)]
    assert docs_gen.main(["--check", *paths]) == 1
    err = capsys.readouterr().err
    assert docs_gen.REGENERATE in err and "hooks.md" in err and "bundled-plugins.md" in err
    assert docs_gen.main(["--write", *paths]) == 0
    assert "| `timeslice_tokens` | `0` |" in guide.read_text(encoding="utf-8")
    assert docs_gen.main(["--check", *paths]) == 0
