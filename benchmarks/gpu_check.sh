#!/usr/bin/env bash
# Every GPU check of course_lib.efficient in one call, 7 minutes at most (GPU_CHECK_TOTAL_S, 400 s by default):
#   python       a python whose torch sees the GPU: $PYTHON, python3, .venv/bin/python, /opt/conda/bin/python;
#                if none does and PyPI can be reached, a venv .gpu-venv with torch from PyPI (CUDA wheels)
#   env          the GPU, driver, torch and triton versions
#   gpu_tests    pytest -m gpu: compiled kernels (not the interpreter), fp16/bf16 at realistic sizes, autotuning
#   triton_tests the Triton tests compiled on the GPU (fp32): layouts, GQA, split-KV, varlen, TMA
#   bench        python -m course_lib.bench --suite efficient: Triton beside SDPA's flash, cuDNN and
#                efficient backends and flex_attention, with a time budget; CSV and markdown
# Each step has its own time limit, cut to what is left of the total; a step that fails or times out is
# logged and the next one runs. The bench writes its CSV after every case, so a cut leaves what it measured.
#
# Results go to benchmarks/results/<YYYY-MM-DD>_<device>/ (summary.txt, bench.csv, bench.md, *.log), and
# are copied to $OUT when it is set (the folder a GPU machine sends back).
#
#   bash benchmarks/gpu_check.sh                     # from anywhere; runs in the repository root
#   GPU_CHECK_FORCE=1 GPU_CHECK_QUICK=1 PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh
#       runs every step even without CUDA, with a --quick benchmark: a test of this script itself
set -u
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH=. MPLBACKEND=Agg PYTHONUNBUFFERED=1
TOTAL=${GPU_CHECK_TOTAL_S:-400}
START=$(date +%s)
FAILED=0
DATE=$(date -u +%Y-%m-%d)

has_cuda() { "$1" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; }

find_python() {  # the first python whose torch sees a GPU; else the first that has torch at all
    local py fallback=""
    for py in ${PYTHON:-} python3 .venv/bin/python /opt/conda/bin/python /usr/bin/python3; do
        command -v "$py" >/dev/null 2>&1 || [ -x "$py" ] || continue
        if has_cuda "$py"; then echo "$py"; return 0; fi
        [ -z "$fallback" ] && "$py" -c "import torch" >/dev/null 2>&1 && fallback=$py
    done
    echo "${fallback:-python3}"
    return 1
}

PY=$(find_python)
FOUND=$?
INSTALL_NOTE="python: $PY"
if [ "$FOUND" -ne 0 ] && [ "${GPU_CHECK_FORCE:-0}" != "1" ] && command -v nvidia-smi >/dev/null 2>&1; then
    # A GPU but no torch that sees it (e.g. a CPU wheel): a CUDA torch from PyPI, when PyPI can be reached.
    if timeout 8 python3 -c "import urllib.request; urllib.request.urlopen('https://pypi.org/simple/torch/', timeout=6)" \
        >/dev/null 2>&1; then
        timeout 150 bash -c "python3 -m venv .gpu-venv && .gpu-venv/bin/pip install -q torch pytest numpy matplotlib \
            && .gpu-venv/bin/pip install -q --no-deps -e ." >/tmp/gpu_check_install.log 2>&1
        if has_cuda .gpu-venv/bin/python; then PY=.gpu-venv/bin/python; INSTALL_NOTE="python: $PY (installed from PyPI)"
        else INSTALL_NOTE="python: $PY; installing a CUDA torch failed (/tmp/gpu_check_install.log)"; fi
    else
        INSTALL_NOTE="python: $PY, whose torch sees no GPU, and PyPI cannot be reached to install one"
    fi
fi

DEVICE=$($PY -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')" 2>/dev/null)
SLUG=$(echo "${DEVICE:-none}" | tr '[:upper:]' '[:lower:]' | sed -e 's/nvidia//g' -e 's/[^a-z0-9]\+/-/g' -e 's/^-//' -e 's/-$//')
RESULTS="benchmarks/results/${DATE}_${SLUG:-none}"
[ "${GPU_CHECK_QUICK:-0}" = "1" ] && RESULTS="${OUT:-/tmp/gpu_check}/quick_${DATE}_${SLUG:-none}"
mkdir -p "$RESULTS" || exit 2
SUMMARY="$RESULTS/summary.txt"
: >"$SUMMARY"

say() { echo "$*" | tee -a "$SUMMARY"; }

left() { echo $((TOTAL - ($(date +%s) - START))); }

step() {  # step NAME LIMIT_SECONDS COMMAND...: run COMMAND within LIMIT (and what is left), log to NAME.log
    local name=$1 limit=$2 start rc status
    shift 2
    [ "$limit" -gt "$(($(left) - 5))" ] && limit=$(($(left) - 5))
    if [ "$limit" -lt 10 ]; then
        say "== $name: skipped, the total time (${TOTAL}s) is spent"
        FAILED=$((FAILED + 1))
        return
    fi
    start=$(date +%s)
    say "== $name (limit ${limit}s): $*"
    timeout --kill-after=5 "$limit" "$@" >"$RESULTS/$name.log" 2>&1
    rc=$?
    case $rc in
        0) status="ok" ;;
        124 | 137) status="TIMEOUT" ;;
        *) status="FAILED (exit $rc)" ;;
    esac
    [ "$rc" -eq 0 ] || FAILED=$((FAILED + 1))
    say "   $status after $(($(date +%s) - start))s, log $RESULTS/$name.log; its last lines:"
    tail -n 6 "$RESULTS/$name.log" | awk '{ print "   | " $0 }' | tee -a "$SUMMARY"
}

finish() {
    say "== done after $(($(date +%s) - START))s: $FAILED step(s) failed; results in $RESULTS"
    case "$(realpath -m "$RESULTS")/" in
        "$(realpath -m "${OUT:-$RESULTS}")"/*) ;;  # already inside $OUT (or no $OUT): nothing to copy
        *) mkdir -p "$OUT/$(basename "$RESULTS")" && cp -r "$RESULTS"/. "$OUT/$(basename "$RESULTS")/" ;;
    esac
    [ "$FAILED" -eq 0 ]
    exit $?
}

say "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
say "device: ${DEVICE:-none}"
say "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
say "command: bash benchmarks/gpu_check.sh (GPU_CHECK_TOTAL_S=$TOTAL)"
say "$INSTALL_NOTE"

step env 15 bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; \
    $PY -c 'import sys, torch, triton; print(sys.version); print(\"torch\", torch.__version__, \"cuda\", \
    torch.version.cuda, \"triton\", triton.__version__); print(\"cuda available:\", torch.cuda.is_available()); \
    print(\"capability:\", torch.cuda.get_device_capability() if torch.cuda.is_available() else None)'"

if [ "${DEVICE:-none}" = "none" ] && [ "${GPU_CHECK_FORCE:-0}" != "1" ]; then
    say "no CUDA GPU is visible to torch: nothing to check (GPU_CHECK_FORCE=1 runs the steps anyway)"
    FAILED=$((FAILED + 1))
    finish
fi

# Autotuning every small test shape would take minutes: the tests use one fixed config per kernel,
# except test_autotuning_picks_a_config, which turns autotuning on for one shape.
step gpu_tests 110 env COURSE_TRITON_AUTOTUNE=0 "$PY" -m pytest -q -rfEs --durations=5 -m gpu -p no:cacheprovider \
    tests/test_efficient_gpu.py
step triton_tests 60 env COURSE_TRITON_AUTOTUNE=0 REQUIRE_TRITON=1 "$PY" -m pytest -q -rfEs -m triton \
    -p no:cacheprovider tests/test_efficient_triton.py tests/test_efficient_triton_features.py
QUICK=()
[ "${GPU_CHECK_QUICK:-0}" = "1" ] && QUICK=(--quick)
# The bench starts no new case once its budget is spent, and gets 45 s more to finish the one in flight.
BUDGET=$(($(left) - 60))
[ "$BUDGET" -lt 30 ] && BUDGET=30
step bench $((BUDGET + 45)) env COURSE_TRITON_TUNE_SPACE="${COURSE_TRITON_TUNE_SPACE:-small}" "$PY" -m course_lib.bench \
    --suite efficient ${QUICK[@]+"${QUICK[@]}"} --budget-s "$BUDGET" --csv "$RESULTS/bench.csv" \
    --markdown "$RESULTS/bench.md"
if [ -f "$RESULTS/bench.csv" ] && [ ! -f "$RESULTS/bench.md" ]; then  # cut short: the markdown from the CSV
    "$PY" -c "import csv, sys; from course_lib.bench.__main__ import format_markdown; \
rows = list(csv.DictReader(open(sys.argv[1]))); \
open(sys.argv[2], 'w').write(format_markdown(rows, sys.argv[3]))" "$RESULTS/bench.csv" "$RESULTS/bench.md" \
        "course_lib.bench --suite efficient (cut short): ${DEVICE:-none}, $DATE" || true
fi
finish
