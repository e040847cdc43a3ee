#!/usr/bin/env bash
# The GPU proof, one prepared script (about 7-8 minutes on one H200):
#   (a) install what the GPU image lacks from .gpu_wheels/, find CamVid (.gpu_data/camvid);
#   (b) the CUDA tests (tests/gpu, marker `cuda`);
#   (c) bench_dse.py on the device at (256,196,384) and (1024,196,384), goal < 50 ms at 1024,
#       and the CPU-vs-device agreement of the DSE components (same seed);
#   (d) the regulariser's overhead on a ViT-S/16 DINO training step at 224 px in bf16
#       (every step, every 4th step), goal < 1.05x at every 4th, and its CPU agreement;
#   (e) a short real-scale run: dino.yaml (ViT-S/16, 224 px) on CamVid for about 3.5
#       minutes, a checkpoint at every DSE evaluation, then `dse-tune validate` on it;
#   (f) summary.md / summary.json of the figures against their goals.
# Outputs (logs, JSON, PNGs; no checkpoints) go to --out, by default
# docs/results/gpu/<device name>/ (cpu: docs/results/gpu/cpu-smoke/).
#
#   bash benchmarks/gpu/fetch_wheels.sh                 # here, with network: wheels + CamVid copy
#   bash benchmarks/gpu/run.sh                          # on the GPU machine
#   bash benchmarks/gpu/run.sh --device cpu             # the same steps at small sizes, on CPU
#
# Environment: REAL_SCALE_MINUTES (default 3.5 on CUDA, 0.5 on CPU), PYTHON.
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
DEVICE=cuda
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "error: unknown argument $1 (use --device cuda|cpu, --out DIR)" >&2; exit 2 ;;
    esac
done
case "$DEVICE" in cuda|cpu) ;; *) echo "error: --device must be cuda or cpu, got $DEVICE" >&2; exit 2 ;; esac
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo "$REPO/.venv/bin/python" || echo python3 )}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg

# (a) what the GPU image lacks, from wheels carried in the checkout (no network there).
if ! "$PYTHON" -c "import lightly" 2>/dev/null; then
    if ! ls .gpu_wheels/*.whl >/dev/null 2>&1; then
        echo "error: lightly is missing and there is no .gpu_wheels/ (run benchmarks/gpu/fetch_wheels.sh" \
             "where there is network, and carry .gpu_wheels)" >&2
        exit 2
    fi
    SITE=/tmp/dse-tune-gpu-site
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .gpu_wheels/*.whl || exit 2
    export PYTHONPATH="$SITE:$PYTHONPATH"
fi
if [ "$DEVICE" = cuda ] && ! "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "error: --device cuda but torch sees no CUDA device (use --device cpu for the smoke run)" >&2
    exit 2
fi
CAMVID=""
for candidate in .gpu_data/camvid ../shared/data/camvid; do
    if [ -d "$candidate/train/images" ]; then CAMVID=$(cd "$candidate" && pwd); break; fi
done
if [ -z "$OUT" ]; then
    if [ "$DEVICE" = cpu ]; then NAME=cpu-smoke; else
        NAME=$("$PYTHON" -c "import re, torch; print(re.sub(r'[^A-Za-z0-9._-]+', '-', torch.cuda.get_device_name()))")
    fi
    OUT=docs/results/gpu/$NAME
fi
mkdir -p "$OUT"
exec > >(tee "$OUT/run.log") 2>&1

if [ "$DEVICE" = cuda ]; then
    DSE_SIZES="256x196x384 1024x196x384"; REG_SIZES="128x196x384 64x196x384"
    STEP_ARGS="--scale full --batch-size 64 --num-workers 8 --steps 40"
    REAL_ARGS="--scale full --eval-every 4 --batch-size 64 --num-workers 12 --probe-size 256 --validate-images 100"
    MINUTES=${REAL_SCALE_MINUTES:-3.5}
else  # the same steps at sizes a CPU runs in a few minutes
    DSE_SIZES="64x49x64 256x49x64"; REG_SIZES="16x49x64"
    STEP_ARGS="--scale tiny --batch-size 8 --num-workers 0 --steps 8"
    REAL_ARGS="--scale tiny --eval-every 1 --batch-size 32 --num-workers 0 --probe-size 16 --validate-images 16"
    MINUTES=${REAL_SCALE_MINUTES:-0.5}
fi

FAILED=()
step() {  # step NAME COMMAND...: run, time, record a failure and go on
    local name=$1; shift
    echo "=== $name: $*"
    local start=$SECONDS
    "$@"
    local status=$?
    echo "=== $name: exit $status after $((SECONDS - start)) s"
    echo "{\"step\": \"$name\", \"exit\": $status, \"seconds\": $((SECONDS - start))}" >> "$OUT/steps.jsonl"
    [ $status -eq 0 ] || FAILED+=("$name")
}
rm -f "$OUT/steps.jsonl"
START=$SECONDS
"$PYTHON" - "$DEVICE" "$CAMVID" > "$OUT/environment.json" <<'EOF'
import json, platform, subprocess, sys, time
import torch, timm, lightning, lightly
device, camvid = sys.argv[1], sys.argv[2]
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
print(json.dumps({
    "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "commit": commit or None, "device": device,
    "device_name": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
    "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
    "timm": timm.__version__, "lightning": lightning.__version__, "lightly": lightly.__version__,
    "cpu_threads": torch.get_num_threads(), "camvid": camvid or None,
}, indent=2))
EOF
cat "$OUT/environment.json"

step cuda_tests "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda tests/gpu -rs --junitxml "$OUT/cuda_tests.xml"
step bench_dse bash -c "\"$PYTHON\" benchmarks/bench_dse.py --device $DEVICE --sizes $DSE_SIZES \
    --variants paper_per_position all_tokens_dim --repeats 3 | tee \"$OUT/bench_dse.jsonl\""
step dse_agreement bash -c "\"$PYTHON\" benchmarks/bench_dse.py --agreement --device $DEVICE --sizes $DSE_SIZES \
    | tee \"$OUT/dse_agreement.jsonl\""
step regularizer bash -c "\"$PYTHON\" benchmarks/bench_regularizer.py --device $DEVICE \
    --figures regularizer agreement overhead --sizes $REG_SIZES --step-space search_spaces/dino.yaml \
    $STEP_ARGS --precision bf16-mixed > \"$OUT/bench_regularizer.jsonl\"; status=\$?; \
    cat \"$OUT/bench_regularizer.jsonl\"; exit \$status"
step real_scale "$PYTHON" benchmarks/gpu/real_scale.py --device "$DEVICE" --data "${CAMVID:-synthetic}" \
    --minutes "$MINUTES" $REAL_ARGS --precision bf16-mixed --out "$OUT/real_scale"
step summary "$PYTHON" benchmarks/gpu/summarize.py "$OUT"

echo "total: $((SECONDS - START)) s; outputs in $OUT"
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "failed steps: ${FAILED[*]}"
    exit 1
fi
