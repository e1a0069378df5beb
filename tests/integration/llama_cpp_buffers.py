"""Run as a script: what llama.cpp itself allocates for a model at given context settings.

``python llama_cpp_buffers.py MODEL.gguf '[{"context": 2048, "sequences": 1, ...}, ...]'``
prints one JSON object per setting: the buffer sizes llama.cpp logs (``KV``, ``compute``,
``output``, ``model``, in MiB with two decimals), the cells of one KV stream, and the exact
growth per cached token of ``llama_state_seq_get_size``: a sequence's saved state grows by
every layer's K and V row plus, in each KV cache (two for a sliding-window model), the
cell's position, sequence count and sequence id (:data:`CELL_META_BYTES`,
``llama_kv_cache::state_write_meta``).

It runs in its own process because it installs its own llama.cpp log callback, which would
replace inferflux's in a test session.
"""

from __future__ import annotations

import ctypes
import json
import re
import sys

import llama_cpp as llama

#: Bytes of cell metadata a sequence's state holds per cached token, per KV cache.
CELL_META_BYTES = 12
_lines: list[str] = []


@llama.llama_log_callback
def _collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    _lines.append(text.decode("utf-8", errors="replace"))


def buffers(text: str) -> dict[str, float]:
    """Sum of each kind of buffer llama.cpp logged, in MiB."""
    found: dict[str, float] = {}
    pattern = r"(\w+) +(model|KV|compute|output) buffer size = +([\d.]+) MiB"
    for _, kind, size in re.findall(pattern, text):
        found[kind] = found.get(kind, 0.0) + float(size)
    return found


def state_growth_per_token(ctx: object, n_vocab: int, first: int, second: int) -> int:
    """The state growth of sequence 0 per token between ``first`` and ``second`` tokens."""
    batch = llama.llama_batch_init(second, 0, 1)
    sizes = []
    try:
        position = 0
        for target in (first, second):
            batch.n_tokens = 0
            while position < target:
                i = batch.n_tokens
                batch.token[i] = 1 + position % (n_vocab - 1)
                batch.pos[i] = position
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = position == target - 1
                batch.n_tokens += 1
                position += 1
            if llama.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")
            sizes.append(llama.llama_state_seq_get_size(ctx, 0))
    finally:
        llama.llama_batch_free(batch)
    return (sizes[1] - sizes[0]) // (second - first)


def main() -> None:
    path, settings = sys.argv[1], json.loads(sys.argv[2])
    llama.llama_log_set(_collect, ctypes.c_void_p())
    llama.llama_backend_init()
    params = llama.llama_model_default_params()
    params.use_extra_bufts = False  # repacking crashes on some CPUs, and changes no size here
    model = llama.llama_model_load_from_file(path.encode(), params)
    if not model:
        raise SystemExit(f"llama.cpp could not load {path}")
    model_buffers = buffers("".join(_lines))
    n_vocab = llama.llama_vocab_n_tokens(llama.llama_model_get_vocab(model))
    for setting in settings:
        del _lines[:]
        context, sequences = setting["context"], setting["sequences"]
        batch = max(setting.get("batch", 512), sequences)
        cparams = llama.llama_context_default_params()
        cparams.n_ctx = context * sequences
        cparams.n_seq_max = sequences
        cparams.n_batch = cparams.n_ubatch = batch
        cparams.n_threads = cparams.n_threads_batch = 1
        cparams.flash_attn_type = -1 if setting.get("flash_attention", True) else 0
        cparams.kv_unified = setting.get("kv_unified", False)
        cparams.swa_full = setting.get("swa_full", True)
        ctx = llama.llama_init_from_model(model, cparams)
        if not ctx:
            raise SystemExit(f"llama.cpp could not create a context for {setting}")
        text = "".join(_lines)
        cells = re.search(r"llama_kv_cache: size = +[\d.]+ MiB \( *(\d+) cells", text)
        result = dict(setting, buffers=buffers(text), model_buffers=model_buffers)
        result["kv_cells"] = int(cells.group(1)) if cells else None
        result["state_growth_per_token"] = state_growth_per_token(ctx, n_vocab, 8, 40)
        print(json.dumps(result), flush=True)
        llama.llama_free(ctx)
    llama.llama_model_free(model)


if __name__ == "__main__":
    main()
