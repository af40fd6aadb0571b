#!/usr/bin/env bash
# The GPU path end to end, in one go (under 8 minutes on one H200):
#   1. each task in conf/task/ at its tiny size (tests/tasks/tiny.py) with trainer=gpu
#      callbacks=spectra, through run.py (a callback that warns about a device fails the check);
#   2. the gpu-marked tests (make test-gpu): every callback on CUDA against the CPU run, each
#      spectral function on CUDA, each task's tiny config in-process;
#   2b. experiment=chefnmr/full (dit-s, 134 M parameters) for 20 steps and 4 targets;
#   3. the benchmarks B1-B3 and bench_chefnmr with --device cuda (--reps 2);
# then a table: check, status, seconds. Exit status 1 when a check failed.
#   bash benchmarks/gpu_check.sh                          # on a machine with a GPU
#   TRAINER=cpu DEVICE=cpu bash benchmarks/gpu_check.sh   # the same script on the CPU (a dry run)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
TRAINER=${TRAINER:-gpu}
DEVICE=${DEVICE:-cuda}
BUDGET_S=${BUDGET_S:-470}   # the whole script; each step gets at most what is left
REPS=${REPS:-2}
export HF_HUB_OFFLINE=1 WANDB_SILENT=true PYTHONUNBUFFERED=1
START=$(date +%s)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
ROWS=()
FAILED=0

if [[ $DEVICE == cuda* ]] && ! "$PY" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
    echo "gpu_check: torch.cuda.is_available() is False with $PY (set DEVICE=cpu TRAINER=cpu for a dry run)" >&2
    exit 2
fi
"$PY" -c 'import torch; print(f"torch {torch.__version__}, cuda {torch.version.cuda}, " + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"))'
echo "python: $PY   trainer=$TRAINER   bench device=$DEVICE   logs: $TMP"

left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }

# step NAME CAP_S DETAIL_FN -- COMMAND...: run COMMAND (log in $TMP/NAME.log) under a timeout of
# min(CAP_S, time left); record status and seconds; DETAIL_FN LOG prints the table's detail and
# returns 0 (ok), 1 (fail) or 2 (skip) for a command that exited 0
step() {
    local name=$1 cap=$2 detail_fn=$3
    shift 4
    local log="$TMP/$name.log" limit status detail rc=0 t0 secs
    limit=$(left)
    (( limit > cap )) && limit=$cap
    if (( limit < 10 )); then
        ROWS+=("$name|SKIP|0|out of time")
        return 0
    fi
    t0=$(date +%s%N)
    timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1 || rc=$?
    secs=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
    if (( rc == 124 || rc == 137 )); then
        status=FAIL detail="timed out after ${limit}s"
    elif (( rc != 0 )); then
        status=FAIL detail="exit $rc: $(grep -v '^\s*$' "$log" | tail -n 1 | cut -c1-70)"
    else
        local verdict=0
        detail=$("$detail_fn" "$log") || verdict=$?
        case $verdict in 0) status=ok ;; 1) status=FAIL ;; *) status=SKIP ;; esac
    fi
    [[ $status == FAIL ]] && FAILED=1
    ROWS+=("$name|$status|$secs|$detail")
    echo "  $name: $status (${secs}s) $detail"
}

task_detail() {  # a spectral callback that warned about a device or skipped on an error fails
    local bad
    bad=$(grep -iE 'spectra/[a-z]+ (is off|skipped)' "$1" | grep -iE 'device|cuda|cpu' | head -n 1 || true)
    if [[ -n $bad ]]; then echo "${bad:0:70}"; return 1; fi
    local off
    off=$(grep -oE 'spectra/[a-z]+ is off' "$1" | sort -u | sed 's/ is off//; s/spectra\///' | tr '\n' ' ' || true)
    echo "completed${off:+; off (not applicable): $off}"
}

pytest_detail() {
    local summary
    summary=$(grep -E '[0-9]+ (passed|failed|skipped|error)' "$1" | tail -n 1)
    echo "${summary:-no summary}"
    grep -qE '[0-9]+ passed' "$1" || return 2  # everything skipped: no GPU seen
}

bench_detail() {
    if grep -q 'does not import' "$1"; then
        grep -m1 'does not import' "$1" | cut -c1-70
        return 2
    fi
    local met
    met=$(grep -E '^B[0-9]: [0-9]+/[0-9]+ targets met' "$1" | tail -n 1)
    echo "${met:-no summary line}; $(grep -c '\[FAIL\]' "$1" || true) target(s) missed"
    [[ -n $met ]] || return 1
}

echo "== tasks (trainer=$TRAINER callbacks=spectra, tiny sizes)"
for yaml in conf/task/*.yaml; do
    task=$(basename "$yaml" .yaml)
    if ! tiny=$("$PY" tests/tasks/tiny.py "$task" 2>/dev/null); then
        ROWS+=("task $task|FAIL|0|no tiny overrides in tests/tasks/tiny.py")
        FAILED=1
        continue
    fi
    # shellcheck disable=SC2086  # the overrides are separate words
    step "task_$task" 120 task_detail -- "$PY" run.py "task=$task" "trainer=$TRAINER" \
        callbacks=spectra $tiny logger=csv print_results=false "hydra.run.dir=$TMP/$task"
done

echo "== chefnmr/full (the dit-s GPU configuration: 300 molecules, 20 steps, 4 targets)"
step chefnmr_full 150 task_detail -- "$PY" run.py experiment=chefnmr/full "trainer=$TRAINER" \
    task.max_molecules=300 task.steps=20 task.eval_targets=4 task.n_samples=2 \
    task.sampling_steps=10 logger=csv print_results=false "hydra.run.dir=$TMP/chefnmr_full"

echo "== pytest -m gpu"
step pytest_gpu 200 pytest_detail -- "$PY" -m pytest -q -m gpu -p no:cacheprovider

echo "== benchmarks (--device $DEVICE --reps $REPS)"
for bench in weights hessian ntk chefnmr; do
    step "bench_$bench" 150 bench_detail -- "$PY" "benchmarks/bench_$bench.py" \
        --device "$DEVICE" --reps "$REPS"
done

total=$(( $(date +%s) - START ))
echo
printf '%-28s %-6s %8s  %s\n' check status seconds detail
printf '%-28s %-6s %8s  %s\n' ---------------------------- ------ -------- ------
for row in "${ROWS[@]}"; do
    IFS='|' read -r name status secs detail <<<"$row"
    printf '%-28s %-6s %8s  %s\n' "$name" "$status" "$secs" "$detail"
done
printf '%-28s %-6s %8s\n' total "$([[ $FAILED == 0 ]] && echo ok || echo FAIL)" "$total"
echo "logs: $TMP"
exit "$FAILED"
