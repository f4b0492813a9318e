#!/usr/bin/env bash
# The GPU verification in one command: the device, the tests marked `gpu`, then bench/gpu_throughput.py at
# full size (stage 0 pipeline vs ceiling for ResNet-18/50, the loader alone, feature extraction, stage II
# resident vs streamed, eager and compiled, peak memory, ratios). 4 min 7 s on an H100 (2026-11-26: tests
# 72 s with the bf16 test's earlier 4-epoch stages I/II, bench about 170 s). Run from anywhere with CUDA:
#
#     bash bench/gpu_check.sh 2>&1 | tee gpu_check.log
#
# Uses .venv/bin/python when the repo has one (make setup), else python3 (an image with PyTorch: the
# core needs torch, torchvision, numpy, pandas, pillow, pyyaml, tabulate, scikit-learn, tqdm, filelock,
# pydantic and pytest, not Ray or MLflow; the README's "GPU" section says how an image without pydantic
# takes its wheels).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

echo "== device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi not found"
"$PY" -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '|',
torch.cuda.get_device_name() if torch.cuda.is_available() else 'NO CUDA GPU VISIBLE')"

# the tests first: they say pass or fail in under a minute, the bench's figures need both to mean anything
echo "== pytest -m gpu"
timeout 150 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py
tests=$?

echo "== bench/gpu_throughput.py (full size)"
timeout 360 "$PY" bench/gpu_throughput.py --device cuda
bench=$?

echo "== exit codes: bench $bench, gpu tests $tests"
[ "$bench" -eq 0 ] && [ "$tests" -eq 0 ]
