"""What a gap in the running seq_ids costs a decode step with per-sequence KV streams.

llama.cpp puts only consecutive seq_ids into one ubatch when each sequence has its own KV
stream, so sequences 0, 2, 4, 6 decode in four graph passes where 0, 1, 2, 3 take one. This
times one decode step (every sequence feeds one token) for a few id layouts through
``LlamaCppBackend``, the engine's view. The engine hands out the lowest free id to keep running
ids contiguous; ids held by idle sequences (prefix reuse) can still leave gaps.

    python benchmarks/seq_id_gaps.py [--steps 32] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from inferflux_core.contracts import BackendSpec, SamplingParams, SequenceChunk
from inferflux_core.sources import find_default_model_path
from inferflux_plugins.backends.llama_cpp import LlamaCppBackend
from inferflux_plugins.devices.cpu import CpuContext

LAYOUTS = {
    "0-3 (contiguous)": [0, 1, 2, 3],
    "0,1,2,4 (one gap)": [0, 1, 2, 4],
    "0,2,4,6 (three gaps)": [0, 2, 4, 6],
    "0-7 (contiguous)": list(range(8)),
}


def step_ms(backend: LlamaCppBackend, seq_ids: list[int], steps: int) -> float:
    """Milliseconds per decode step of ``seq_ids``, after a short prompt each."""
    prompt = backend.tokenize("Once upon a time")
    for seq_id in seq_ids:
        backend.open_sequence(seq_id, SamplingParams(temperature=0.0))
    try:
        last = backend.decode([SequenceChunk(s, prompt) for s in seq_ids])
        start = time.perf_counter()
        for _ in range(steps):
            last = backend.decode([SequenceChunk(s, (last[s],)) for s in seq_ids])
        return (time.perf_counter() - start) / steps * 1000
    finally:
        for seq_id in seq_ids:
            backend.free_sequence(seq_id)


def main() -> None:
    """Print one row per layout: median milliseconds per step and tokens per second."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    spec = BackendSpec(
        model_name="bench",
        model_path=find_default_model_path(),
        device=CpuContext().detect(),
        context_length=1024,
        max_sequences=8,
    )
    backend = LlamaCppBackend(spec)
    try:
        print("| running seq_ids | ms per step | tok/s |")
        print("|---|---|---|")
        for name, seq_ids in LAYOUTS.items():
            runs = [step_ms(backend, seq_ids, args.steps) for _ in range(args.repeat)]
            ms = statistics.median(runs)
            print(f"| {name} | {ms:.1f} | {len(seq_ids) * 1000 / ms:.0f} |")
    finally:
        backend.close()


if __name__ == "__main__":
    main()
