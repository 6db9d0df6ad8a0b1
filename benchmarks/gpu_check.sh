#!/usr/bin/env bash
# The prepared GPU check of issue 16, in one call (about 5 minutes on one H200; the two
# checks are capped at 330 s and 210 s, so the whole fits a 600 s device command):
#   1. benchmarks/gpu_check_engine.py: the CuPy sweep at n = 175,000 x d = 2048 (protocol
#      all, cosine, 1025 radii): wall time and pairs/s; agreement with the NumPy path on
#      subsets (exact for hamming and integer euclidean, within rounding for cosine);
#   2. benchmarks/gpu_check_features.py: CUDA extraction (resnet50, vgg16; random weights
#      where the defaults are not cached: speed only) on 2,000 synthetic photos: loader
#      alone, model alone, end to end, and which one limits.
#
# From the repository root, on a machine with CUDA, CuPy and PyTorch:
#   bash benchmarks/gpu_check.sh            # the full check
#   bash benchmarks/gpu_check.sh --smoke    # CPU fallbacks on tiny sizes (any machine, < 1 min)
# When zarr cannot be imported (this workplace's H200 image lacks zarr 3 and its needs),
# the wheels in .whl/ are installed first (see benchmarks/README.md).
# Output goes to stdout and, when $OUT is set, to $OUT/gpu_check.log and
# $OUT/gpu_check_features.json. Exit status: 1 when either check fails.
set -uo pipefail

smoke=0
[[ "${1:-}" == "--smoke" ]] && smoke=1
log=${OUT:+$OUT/gpu_check.log}
log=${log:-/dev/null}
json=${OUT:+$OUT/gpu_check_features.json}
json=${json:-/tmp/gpu_check_features.json}
python=$(command -v python3 || command -v python)
export PYTHONUNBUFFERED=1 CUPY_TF32=0

export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
if ! "$python" -c 'import zarr' 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/risbench-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/risbench-site:$PYTHONPATH
fi

status=0
{
    date -u
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
        --format=csv,noheader
    "$python" -c 'import sys, numpy, torch; print("python", sys.version.split()[0],
        "numpy", numpy.__version__, "torch", torch.__version__, "cuda", torch.cuda.is_available())'
    if ((smoke)); then
        engine=(--cpu-only --n 1400 --subset 700 --d 64)
        feats=(--device cpu --n 16 --models mobilenet_v2 --batch-size 8 --workers 1 --warmup 1)
    else
        engine=()
        feats=()
    fi
    echo "== engine: benchmarks/gpu_check_engine.py ${engine[*]}"
    timeout 330 "$python" benchmarks/gpu_check_engine.py "${engine[@]}" || status=1
    echo "== features: benchmarks/gpu_check_features.py ${feats[*]}"
    timeout 210 "$python" benchmarks/gpu_check_features.py "${feats[@]}" --json "$json" || status=1
    echo "== done: $([[ $status == 0 ]] && echo 'both checks ran' || echo 'a check FAILED')"
    exit $status
} 2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"
