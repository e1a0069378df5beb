"""The floor to compare servers against: llama-cpp-python's low-level API, one sequence, no server.

One ``llama_batch`` and a C sampler chain (greedy): prefill the chat prompt, sample, then feed
each sampled token back, ``N`` tokens in all, whatever they are (EOS included: the loop never
stops early). Run as a script it prints one JSON object; ``serving_throughput.py`` runs it in a
child process so the benchmark client never holds a model or llama.cpp threads.

    .venv/bin/python benchmarks/_raw_llama.py --tokens 128 --repeat 3
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from _cpu import CONTENTION_CORES, RETRY_PAUSE_SECONDS, CpuMeter
from _workload import CONTEXT_LENGTH, cpu_has_amx, messages, model_path, usable_cores


@dataclass(frozen=True, slots=True)
class RawRun:
    """One measured generation."""

    tokens: int
    prompt_tokens: int
    seconds: float
    ttft: float
    tok_s: float
    decode_tok_s: float
    cpu_self: float
    cpu_other: float | None


def _quiet_logs(llama: Any) -> Any:
    """Silence llama.cpp's log lines; returns the callback, which must be kept alive."""

    def ignore(_level: int, _text: bytes | None, _user_data: Any) -> None:
        return None

    callback = llama.llama_log_callback(ignore)
    llama.llama_log_set(callback, ctypes.c_void_p(0))
    return callback


class RawGenerator:
    """A model, a one-sequence context, a batch and a greedy sampler chain."""

    def __init__(self, path: str, threads: int, *, repack: bool) -> None:
        import llama_cpp as llama

        self.llama = llama
        self._log_callback = _quiet_logs(llama)
        llama.llama_backend_init()
        model_params = llama.llama_model_default_params()
        model_params.use_extra_bufts = repack
        self.model = llama.llama_model_load_from_file(path.encode(), model_params)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        ctx_params = llama.llama_context_default_params()
        ctx_params.n_ctx = CONTEXT_LENGTH
        ctx_params.n_batch = ctx_params.n_ubatch = 512
        ctx_params.n_seq_max = 1
        ctx_params.n_threads = ctx_params.n_threads_batch = threads
        self.ctx = llama.llama_init_from_model(self.model, ctx_params)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context")
        self.vocab = llama.llama_model_get_vocab(self.model)
        self.memory = llama.llama_get_memory(self.ctx)
        self.batch = llama.llama_batch_init(512, 0, 1)
        self.sampler = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
        llama.llama_sampler_chain_add(self.sampler, llama.llama_sampler_init_greedy())

    def close(self) -> None:
        """Free the sampler, batch, context and model."""
        llama = self.llama
        llama.llama_sampler_free(self.sampler)
        llama.llama_batch_free(self.batch)
        llama.llama_free(self.ctx)
        llama.llama_model_free(self.model)

    def token_text(self, token: int) -> str:
        """The text of a (special) token."""
        text = self.llama.llama_vocab_get_text(self.vocab, token)
        return text.decode("utf-8", errors="replace") if text else ""

    def eog_tokens(self) -> list[int]:
        """Every end-of-generation token id (EOS, end of turn…)."""
        n_vocab = self.llama.llama_vocab_n_tokens(self.vocab)
        return [t for t in range(n_vocab) if self.llama.llama_vocab_is_eog(self.vocab, t)]

    def chat_prompt_tokens(self, index: int = 0) -> list[int]:
        """The chat prompt of request ``index``, rendered with the model's template."""
        from inferflux_core.chat_template import ChatTemplate

        llama = self.llama
        template = llama.llama_model_chat_template(self.model, None)
        if not template:
            raise RuntimeError("the model has no chat template")
        bos = self.token_text(llama.llama_vocab_bos(self.vocab))
        eos = self.token_text(llama.llama_vocab_eos(self.vocab))
        text = ChatTemplate(template.decode(), bos_token=bos, eos_token=eos).render(
            messages(index), add_generation_prompt=True
        )
        add_bos = bool(llama.llama_vocab_get_add_bos(self.vocab)) and not (
            bos and text.startswith(bos)
        )
        data = text.encode()
        capacity = len(data) + 16
        buffer = (llama.llama_token * capacity)()
        n = llama.llama_tokenize(self.vocab, data, len(data), buffer, capacity, add_bos, True)
        if n < 0:
            raise RuntimeError("tokenizing the prompt failed")
        return list(buffer[:n])

    def _fill(self, tokens: list[int], start: int) -> None:
        batch = self.batch
        batch.n_tokens = len(tokens)
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = start + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = False
        batch.logits[len(tokens) - 1] = True

    def generate(self, prompt: list[int], n_tokens: int) -> tuple[float, float, list[int]]:
        """Prefill ``prompt`` and generate ``n_tokens`` greedily, never stopping at EOS.

        Returns (seconds for the whole request, seconds to the first token, the tokens).
        """
        llama, ctx, sampler = self.llama, self.ctx, self.sampler
        llama.llama_memory_clear(self.memory, True)
        llama.llama_sampler_reset(sampler)
        decode, sample = llama.llama_decode, llama.llama_sampler_sample
        batch = self.batch
        out: list[int] = []
        started = time.perf_counter()
        self._fill(prompt, 0)
        if decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed on the prompt")
        token = sample(sampler, ctx, -1)
        first = time.perf_counter()
        out.append(token)
        position = len(prompt)
        while len(out) < n_tokens:
            batch.n_tokens = 1
            batch.token[0] = token
            batch.pos[0] = position
            batch.n_seq_id[0] = 1
            batch.seq_id[0][0] = 0
            batch.logits[0] = True
            position += 1
            if decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")
            token = sample(sampler, ctx, -1)
            out.append(token)
        return time.perf_counter() - started, first - started, out


def measure(
    n_tokens: int,
    repeat: int,
    threads: int,
    repack: bool,
    *,
    retries: int = 0,
    max_other: float = CONTENTION_CORES,
) -> dict[str, Any]:
    """Load the model, warm up, run ``repeat`` measured generations; a JSON-able summary.

    A run during which other processes used more than ``max_other`` cores is discarded and
    run again after a pause, at most ``retries`` times in all (the count is reported).
    """
    generator = RawGenerator(str(model_path()), threads, repack=repack)
    try:
        prompt = generator.chat_prompt_tokens(0)
        generator.generate(prompt, min(n_tokens, 16))  # warm-up
        runs: list[RawRun] = []
        discarded = 0
        while len(runs) < repeat:
            meter = CpuMeter()
            meter.start()
            seconds, ttft, out = generator.generate(prompt, n_tokens)
            usage = meter.stop()
            if usage.other is not None and usage.other > max_other and discarded < retries:
                discarded += 1
                time.sleep(RETRY_PAUSE_SECONDS)
                continue
            runs.append(
                RawRun(
                    tokens=len(out),
                    prompt_tokens=len(prompt),
                    seconds=seconds,
                    ttft=ttft,
                    tok_s=len(out) / seconds,
                    decode_tok_s=(len(out) - 1) / max(seconds - ttft, 1e-9),
                    cpu_self=usage.me,
                    cpu_other=usage.other,
                )
            )
        return {
            "threads": threads,
            "repack": repack,
            "eog_tokens": generator.eog_tokens(),
            "discarded": discarded,
            "runs": [asdict(run) for run in runs],
        }
    finally:
        generator.close()


def main(argv: list[str] | None = None) -> int:
    """Command line: print the measurement as JSON on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=usable_cores())
    parser.add_argument(
        "--retry-contended", type=int, default=0, help="re-runs allowed for contended runs"
    )
    args = parser.parse_args(argv)
    result = measure(
        args.tokens,
        args.repeat,
        args.threads,
        repack=not cpu_has_amx(),
        retries=args.retry_contended,
    )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
