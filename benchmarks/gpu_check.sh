#!/usr/bin/env bash
# Every GPU check of course_lib.efficient in one call, 7 minutes at most (15 + 115 + 85 + 185 s, 5 s grace each):
#   env          the GPU, driver, torch and triton versions
#   gpu_tests    pytest -m gpu: fp16/bf16 at realistic sizes, autotuning
#   triton_tests the Triton tests (run natively on the GPU, in fp32)
#   bench        python -m course_lib.bench --suite efficient: the GPU table, also as CSV
# Each step has its own time limit; a step that fails or times out is logged and the next one runs.
# Logs and CSV go to $OUT (default benchmarks/results/latest): summary.txt, env.log, gpu_tests.log,
# triton_tests.log, bench.log, bench.csv. It uses the machine's own python3, PYTHONPATH=. and no installs.
#
#   OUT=/tmp/gpu benchmarks/gpu_check.sh           # from anywhere; runs in the repository root
#   GPU_CHECK_FORCE=1 GPU_CHECK_QUICK=1 PYTHON=.venv/bin/python benchmarks/gpu_check.sh
#       runs every step even without CUDA, with a --quick benchmark: a test of this script itself
set -u
cd "$(dirname "$0")/.." || exit 2
OUT="${OUT:-benchmarks/results/latest}"
mkdir -p "$OUT" || exit 2
export PYTHONPATH=. MPLBACKEND=Agg PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
SUMMARY="$OUT/summary.txt"
FAILED=0

say() { echo "$*" | tee -a "$SUMMARY"; }

step() {  # step NAME LIMIT_SECONDS COMMAND...: run COMMAND with a time limit, log to $OUT/NAME.log
    local name=$1 limit=$2 start rc status
    shift 2
    start=$(date +%s)
    say "== $name (limit ${limit}s): $*"
    timeout --kill-after=5 "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    case $rc in
        0) status="ok" ;;
        124 | 137) status="TIMEOUT" ;;
        *) status="FAILED (exit $rc)" ;;
    esac
    [ "$rc" -eq 0 ] || FAILED=$((FAILED + 1))
    say "   $status after $(($(date +%s) - start))s, log $OUT/$name.log; its last lines:"
    tail -n 6 "$OUT/$name.log" | awk '{ print "   | " $0 }' | tee -a "$SUMMARY"
}

: >"$SUMMARY"
DEVICE=$($PY -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')" 2>/dev/null)
say "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
say "device: ${DEVICE:-none}"
say "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
say "command: OUT=$OUT benchmarks/gpu_check.sh"

step env 15 bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; \
    $PY -c 'import sys, torch, triton; print(sys.version); print(\"torch\", torch.__version__, \"cuda\", \
    torch.version.cuda, \"triton\", triton.__version__); print(\"cuda available:\", torch.cuda.is_available())'"

if [ "${DEVICE:-none}" = "none" ] && [ "${GPU_CHECK_FORCE:-0}" != "1" ]; then
    say "no CUDA GPU is visible to torch: nothing to check (GPU_CHECK_FORCE=1 runs the steps anyway)"
    exit 1
fi

# Autotuning every small test shape would take minutes: the tests use one fixed config per kernel,
# except test_autotuning_picks_a_config, which turns autotuning on for one shape.
step gpu_tests 115 env COURSE_TRITON_AUTOTUNE=0 "$PY" -m pytest -q -rfEs --durations=5 -m gpu tests/test_efficient_gpu.py
step triton_tests 85 env COURSE_TRITON_AUTOTUNE=0 REQUIRE_TRITON=1 "$PY" -m pytest -q -rfEs -m triton \
    tests/test_efficient_triton.py
QUICK=()
[ "${GPU_CHECK_QUICK:-0}" = "1" ] && QUICK=(--quick)
step bench 185 "$PY" -m course_lib.bench --suite efficient ${QUICK[@]+"${QUICK[@]}"} --csv "$OUT/bench.csv"

say "== done: $FAILED step(s) failed"
[ "$FAILED" -eq 0 ]
