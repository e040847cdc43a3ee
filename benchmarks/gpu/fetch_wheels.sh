#!/usr/bin/env bash
# Prepare, on a machine with network, what benchmarks/gpu/run.sh needs on the GPU machine
# (no network there; only the checkout travels, ../shared does not):
#   .gpu_wheels/   the wheels of the Python packages missing there (lightly and its
#                  pure-Python needs; the GPU image already has torch, timm, lightning,
#                  numpy, scipy, matplotlib, pyyaml, pytest; Ray and Optuna are not needed)
#   .gpu_data/camvid   a copy of CamVid from ../shared/data/camvid, when present
# Both folders are git-ignored; name them in the device call's carry list.
#
#   bash benchmarks/gpu/fetch_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
WHEELS=.gpu_wheels
# Versions pinned to the ones the test suite runs with (.venv); one version of each.
BINARY_WHEELS=(lightly==1.6.0 hydra-core==1.3.8 omegaconf==2.3.1)
SOURCE_ONLY=(antlr4-python3-runtime==4.9.3)   # published as an sdist only: built here (pure Python)
MAX_MIB=64

rm -rf "$WHEELS" && mkdir -p "$WHEELS"
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux2014_x86_64 --platform any -d "$WHEELS" "${BINARY_WHEELS[@]}"
"$PYTHON" -m pip wheel -q --no-deps -w "$WHEELS" "${SOURCE_ONLY[@]}"
size_kib=$(du -sk "$WHEELS" | cut -f1)
echo "wheels: $(ls "$WHEELS" | tr '\n' ' ')"
echo "size of $WHEELS: ${size_kib} KiB"
if [ "$size_kib" -gt $((MAX_MIB * 1024)) ]; then
    echo "error: $WHEELS is over ${MAX_MIB} MiB, the device call's carry limit" >&2
    exit 1
fi

CAMVID=../shared/data/camvid
if [ -d "$CAMVID/train/images" ]; then
    rm -rf .gpu_data/camvid && mkdir -p .gpu_data
    cp -r "$CAMVID" .gpu_data/camvid
    echo "CamVid copied to .gpu_data/camvid ($(du -sh .gpu_data/camvid | cut -f1))"
else
    echo "note: no CamVid at $CAMVID; run.sh will pretrain on synthetic scenes instead"
fi
echo "total to carry: $(du -shc "$WHEELS" .gpu_data 2>/dev/null | tail -1 | cut -f1)"
