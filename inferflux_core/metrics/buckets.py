"""Histogram buckets: vLLM's (so its dashboards' quantiles read the same), stretched where a
CPU's latencies run longer than a GPU's."""

from __future__ import annotations

#: Sequences decoded together in one step, and inputs embedded in one call.
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128)

#: Time to first token: vLLM's boundaries (1 ms to 2560 s), so a CPU's tens of seconds fit.
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip

#: Time between two tokens of one request: vLLM's (10 ms to 80 s).
INTER_TOKEN_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip

#: A request's end-to-end, queue, prefill and decode times: vLLM's (0.3 s to 7680 s), with
#: finer steps below 0.3 s, where a small model on a GPU answers.
REQUEST_LATENCY_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
    40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip

#: Tokens (prompt and generated) of one engine step: vLLM's.
ITERATION_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)

#: Seconds a model took to load.
LOAD_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


def build_1_2_5_buckets(max_value: int) -> tuple[int, ...]:
    """1, 2, 5, 10, 20, 50, ... up to ``max_value`` (vLLM's token-count buckets).

    >>> build_1_2_5_buckets(100)
    (1, 2, 5, 10, 20, 50, 100)
    """
    buckets: list[int] = []
    scale = 1
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * scale
            if value > max_value:
                return tuple(buckets)
            buckets.append(value)
        scale *= 10


#: Prompt and generated tokens of one request: vLLM's 1-2-5 steps, up to a million.
TOKEN_COUNT_BUCKETS = build_1_2_5_buckets(1 << 20)
