"""Decode speed of LlamaCppBackend against a bare llama-cpp-python loop on the same settings.

Both sides load the default model with the same context parameters (context, sequences,
batch size, threads, KV layout, repacking), prefill one chat prompt per sequence, then time
``--tokens`` greedy decode steps in which every sequence feeds its last token (EOS is ignored:
generation just continues). The table shows aggregate tokens per second, the backend's speed
as a share of the bare loop's, and how many cores other processes used meanwhile (anything
well above 0 means the row was measured on a busy machine and is not worth comparing).

    python benchmarks/backend_step.py [--tokens 128] [--sequences 1 4 8] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

from _cpu import CpuMeter

from inferflux_core.contracts import BackendSpec, SamplingParams, SequenceChunk
from inferflux_core.sources import find_default_model_path
from inferflux_plugins.backends.llama_cpp import LlamaCppBackend
from inferflux_plugins.backends.llama_cpp.options import decide_repack
from inferflux_plugins.backends.llama_cpp.runtime import load_llama
from inferflux_plugins.devices.cpu import CpuContext, cpu_has_amx

PROMPT = "<|im_start|>user\nWrite a long story about a lighthouse keeper.<|im_end|>\n"
PROMPT += "<|im_start|>assistant\n"
CONTEXT = 2048
MAX_SEQUENCES = 8
BATCH = 512

Run = Callable[[int, int], float]


def backend_runner(threads: int, kv_unified: bool) -> tuple[Run, Callable[[], None]]:
    """A function timing ``n_tokens`` steps of ``n_seq`` sequences through the backend."""
    spec = BackendSpec(
        model_name="bench",
        model_path=find_default_model_path(),
        device=CpuContext().detect(),
        context_length=CONTEXT,
        max_sequences=MAX_SEQUENCES,
        options={"threads": threads, "batch_size": BATCH, "kv_unified": kv_unified},
    )
    backend = LlamaCppBackend(spec)
    prompt = backend.tokenize(PROMPT)

    def run(n_seq: int, n_tokens: int) -> float:
        for seq_id in range(n_seq):
            backend.open_sequence(seq_id, SamplingParams(temperature=0.0))
        last = backend.decode([SequenceChunk(s, prompt) for s in range(n_seq)])
        started = time.perf_counter()
        for _ in range(n_tokens):
            last = backend.decode([SequenceChunk(s, (t,)) for s, t in last.items()])
        elapsed = time.perf_counter() - started
        for seq_id in range(n_seq):
            backend.free_sequence(seq_id)
        return elapsed

    return run, backend.close


def raw_runner(threads: int, kv_unified: bool) -> tuple[Run, Callable[[], None]]:
    """The same loop written directly against llama-cpp-python, as in its examples."""
    llama = load_llama()
    model_params = llama.llama_model_default_params()
    model_params.n_gpu_layers = 0
    model_params.use_extra_bufts = decide_repack("auto", cpu_has_amx()).use_extra_bufts
    model = llama.llama_model_load_from_file(str(find_default_model_path()).encode(), model_params)
    params = llama.llama_context_default_params()
    params.n_ctx, params.n_seq_max = CONTEXT, MAX_SEQUENCES
    params.n_batch = params.n_ubatch = BATCH
    params.n_threads = params.n_threads_batch = threads
    params.kv_unified = kv_unified
    ctx = llama.llama_init_from_model(model, params)
    vocab = llama.llama_model_get_vocab(model)
    mem = llama.llama_get_memory(ctx)
    text = PROMPT.encode()
    buffer = (llama.llama_token * 256)()
    prompt = list(buffer[: llama.llama_tokenize(vocab, text, len(text), buffer, 256, True, True)])
    batch = llama.llama_batch_init(BATCH, 0, 1)

    def fill(entries: Sequence[tuple[int, int, int, bool]]) -> None:
        batch.n_tokens = len(entries)
        for i, (token, pos, seq, logits) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits

    def run(n_seq: int, n_tokens: int) -> float:
        samplers = []
        for _ in range(n_seq):
            chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
            llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_greedy())
            samplers.append(chain)
        n = len(prompt)
        fill([(t, i, s, i == n - 1) for s in range(n_seq) for i, t in enumerate(prompt)])
        assert llama.llama_decode(ctx, batch) == 0
        last = [llama.llama_sampler_sample(samplers[s], ctx, s * n + n - 1) for s in range(n_seq)]
        pos = n
        started = time.perf_counter()
        for _ in range(n_tokens):
            fill([(last[s], pos, s, True) for s in range(n_seq)])
            assert llama.llama_decode(ctx, batch) == 0
            last = [llama.llama_sampler_sample(samplers[s], ctx, s) for s in range(n_seq)]
            pos += 1
        elapsed = time.perf_counter() - started
        for chain in samplers:
            llama.llama_sampler_free(chain)
        llama.llama_memory_seq_rm(mem, -1, -1, -1)
        return elapsed

    def close() -> None:
        llama.llama_batch_free(batch)
        llama.llama_free(ctx)
        llama.llama_model_free(model)

    return run, close


def best_rates(
    runs: dict[str, Run], n_seq: int, n_tokens: int, repeat: int
) -> tuple[dict[str, float], float]:
    """Each runner's best of ``repeat`` runs in tokens per second, taking turns so that drift
    hits both alike, and the cores other processes used meanwhile (contention makes
    llama.cpp's numbers useless).
    """
    for run in runs.values():
        run(n_seq, 8)
    best = dict.fromkeys(runs, float("inf"))
    meter = CpuMeter()
    meter.start()
    for _ in range(repeat):
        for name, run in runs.items():
            best[name] = min(best[name], run(n_seq, n_tokens))
    other = meter.stop().other or 0.0
    return {name: n_seq * n_tokens / seconds for name, seconds in best.items()}, other


def main(argv: Sequence[str] | None = None) -> None:
    """Print the comparison table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--sequences", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=CpuContext().detect().cores)
    args = parser.parse_args(argv)
    print(f"model {find_default_model_path().name}, threads {args.threads}, ", end="")
    print(f"{args.tokens} greedy tokens per sequence, best of {args.repeat}")
    print(
        f"{'KV layout':<10} {'seqs':>4} {'raw tok/s':>10} {'backend tok/s':>14} {'ratio':>7}"
        f" {'other CPU':>10}"
    )
    for kv_unified in (True, False):
        runners: dict[str, tuple[Run, Callable[[], None]]] = {
            "raw": raw_runner(args.threads, kv_unified),
            "backend": backend_runner(args.threads, kv_unified),
        }
        runs = {name: run for name, (run, _) in runners.items()}
        for n_seq in args.sequences:
            rates, other = best_rates(runs, n_seq, args.tokens, args.repeat)
            raw, ours = rates["raw"], rates["backend"]
            layout = "unified" if kv_unified else "split"
            print(
                f"{layout:<10} {n_seq:>4} {raw:>10.1f} {ours:>14.1f} {ours / raw:>7.1%}"
                f" {other:>10.2f}"
            )
        for _, close in runners.values():
            close()


if __name__ == "__main__":
    main()
