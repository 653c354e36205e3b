#!/usr/bin/env bash
# One prepared GPU check, sized for a borrowed H100/H200 (docs/gpu_check.md): which dependencies
# import, AllNC vs CE training-step throughput, the class-mean sync over NCCL, a short AllNC run that
# must reach a stated accuracy, and (where Ray, DeepSpeed and WebDataset are installed) the distributed
# job on one Ray Train worker with ZeRO-2 and bf16. Every part runs under its own hard time limit, and
# the limits add up to under 10 minutes. Results: <out>/gpu_check.json and .md; the last line says
# PASS or FAIL.
#
#   bash bench/gpu_check.sh [--quick] [--device cuda|cpu] [--out DIR]      (PYTHON=... picks the interpreter)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
OUT="$REPO/bench/results"
PART_ARGS=()
LIMIT_FACTOR=1

# Time limits in seconds. On a GPU they add up, with the kill grace, to 45 + 130 + 60 + 200 + 90 +
# 30 + 6 x 5 = 585 s: under 10 min even when every part runs into its limit (typical use on an H100
# stays well under each). --quick (a smoke run on shared CPUs) multiplies them by QUICK_LIMIT_FACTOR: there
# they only stop a hang, and a loaded machine must not trip them.
DEPS_S=45
declare -A PART_S=([throughput]=130 [sync]=60 [accuracy]=200 [distributed]=90)
REPORT_S=30
KILL_GRACE_S=5
QUICK_LIMIT_FACTOR=4

usage() {
  sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while (($#)); do
  case "$1" in
    --quick) PART_ARGS+=(--quick); LIMIT_FACTOR=$QUICK_LIMIT_FACTOR; shift ;;
    --device) PART_ARGS+=(--device "${2:?--device needs cuda or cpu}"); shift 2 ;;
    --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

DEPS_S=$((DEPS_S * LIMIT_FACTOR))
REPORT_S=$((REPORT_S * LIMIT_FACTOR))
for part in "${!PART_S[@]}"; do PART_S[$part]=$((PART_S[$part] * LIMIT_FACTOR)); done

# The check's modules run as `python -m bench.<name>`, from any working directory.
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# Keep tool state out of $HOME on a machine that is not ours.
export MPLCONFIGDIR="${MPLCONFIGDIR:-$(mktemp -d)}"
mkdir -p "$OUT/parts"
rm -f "$OUT"/parts/*.json  # a part that fails this time must not show last time's figures

echo "== machine"
if command -v nvidia-smi >/dev/null; then nvidia-smi -L || echo "nvidia-smi -L failed"; else echo "nvidia-smi: not found"; fi
echo "python: $(command -v "$PY") ($("$PY" --version 2>&1))"

echo "== dependencies (each import in its own process, ${DEPS_S} s limit)"
timeout -k "$KILL_GRACE_S" "$DEPS_S" "$PY" -m bench.gpu_check_deps --json "$OUT/parts/deps.json" \
  --timeout-s "$((DEPS_S - KILL_GRACE_S))" || {
  status=$?
  echo "dependency check failed (exit $status): install what it names above, then rerun" >&2
  exit "$status"
}
"$PY" -c 'import torch; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, CUDA devices visible: {torch.cuda.device_count()}")'

EXITS=()
for part in throughput sync accuracy distributed; do
  echo "== $part (${PART_S[$part]} s limit)"
  status=0
  timeout -k "$KILL_GRACE_S" "${PART_S[$part]}" "$PY" -m bench.gpu_check "$part" \
    ${PART_ARGS[@]+"${PART_ARGS[@]}"} --out "$OUT" || status=$?
  if ((status == 124 || status == 137)); then
    echo "$part: stopped at its ${PART_S[$part]} s limit" >&2
  elif ((status != 0)); then
    echo "$part: failed (exit $status)" >&2
  fi
  EXITS+=(--exit "$part=$status")
done

echo "== report"
timeout -k "$KILL_GRACE_S" "$REPORT_S" "$PY" -m bench.gpu_check_report --out "$OUT" "${EXITS[@]}"
