#!/usr/bin/env bash
# The GPU verification in one command, about 5 minutes on an H100: the device, bench/gpu_throughput.py at
# full size (stage 0 pipeline vs ceiling for ResNet-18/50, feature extraction, stage II resident vs
# streamed, peak memory, ratios) and the tests marked `gpu`. Run from anywhere on a machine with CUDA:
#
#     bash bench/gpu_check.sh 2>&1 | tee gpu_check.log
#
# Uses .venv/bin/python when the repo has one (make setup), else python3 (an image with PyTorch: the
# core needs torch, torchvision, numpy, pandas, pillow, pyyaml, matplotlib, tabulate, scikit-learn, scipy
# and pytest, not Ray).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

echo "== device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi not found"
"$PY" -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '|',
torch.cuda.get_device_name() if torch.cuda.is_available() else 'NO CUDA GPU VISIBLE')"

echo "== bench/gpu_throughput.py (full size)"
timeout 330 "$PY" bench/gpu_throughput.py --device cuda
bench=$?

echo "== pytest -m gpu"
timeout 220 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py
tests=$?

echo "== exit codes: bench $bench, gpu tests $tests"
[ "$bench" -eq 0 ] && [ "$tests" -eq 0 ]
