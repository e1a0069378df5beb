"""The model's chat template and tokenizer, as inferflux's chat path needs them.

inferflux renders the chat with the model's own template and hands vLLM token ids, so
templates and tool-call parsing behave as on llama.cpp. The template is read from the GGUF's
metadata or the folder's files without converting anything (the engine asks for it before the
backend starts); the tokenizer is the folder's, loaded with transformers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inferflux_core.errors import ConfigError
from inferflux_core.gguf_check import chat_template, read_gguf_header
from inferflux_core.sources import resolve_model_source


def source_chat_template(source: str) -> str | None:
    """The chat template of ``source`` (a Hugging Face folder or a GGUF), if it has one."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        return folder_chat_template(folder)
    return chat_template(read_gguf_header(resolve_model_source(source)))


def folder_chat_template(folder: Path) -> str | None:
    """``chat_template.jinja``, else ``tokenizer_config.json``'s ``chat_template``."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    template = config.get("chat_template") if isinstance(config, dict) else None
    return template if isinstance(template, str) else None


class TokenizerText:
    """Tokenizes prompts with the model's Hugging Face tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        bos = getattr(tokenizer, "bos_token", None)
        self._bos = bos if isinstance(bos, str) and bos else None

    @classmethod
    def load(cls, folder: str) -> TokenizerText:
        """The tokenizer of ``folder`` (blocking)."""
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:
            raise ConfigError(f"the vllm backend needs transformers: {exc}") from None
        return cls(AutoTokenizer.from_pretrained(folder))

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text``; special tokens (BOS) added unless a rendered template
        already starts with BOS, as vLLM's own chat serving does."""
        special = self._bos is None or not text.startswith(self._bos)
        return list(self._tokenizer.encode(text, add_special_tokens=special))
