#!/usr/bin/env bash
# The GPU run for issue 17, in stages, each under its own time box; JSON and logs go to
# $OUT (the device tool's folder) or var/bench/gpu, and a summary table is printed last.
#
# On the device (wheels from tests/benchmarks/gpu/fetch_wheels.sh, carried):
#   run(command="bash tests/benchmarks/gpu/run_all.sh shakedown sd15", carry=["var/wheels"], timeout_s=560)
#   run(command="bash tests/benchmarks/gpu/run_all.sh sdxl", carry=["var/wheels"], timeout_s=400)
#   run(command="bash tests/benchmarks/gpu/run_all.sh gate", carry=["var/wheels"], timeout_s=360)
#   run(command="bash tests/benchmarks/gpu/run_all.sh hires", carry=["var/wheels"], timeout_s=360)
# (all three stages in one call need ~11 min, over the 10-minute limit of one command.)
# Here, on the CPU, the same stages at tiny sizes (catches typos before GPU time is spent):
#   tests/benchmarks/gpu/run_all.sh --cpu
set -uo pipefail
cd "$(dirname "$0")/../../.."
MODE=cuda
if [[ "${1:-}" == "--cpu" ]]; then MODE=cpu; shift; fi
STAGES=("$@")
[[ ${#STAGES[@]} -eq 0 ]] && STAGES=(shakedown sd15 sdxl)
DEST=${OUT:-var/bench/gpu}
mkdir -p "$DEST"
export PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/inductor}

if [[ $MODE == cuda ]]; then
  PY=${PY:-python3}
  if compgen -G "var/wheels/*.whl" >/dev/null; then
    # --target + PYTHONPATH first: the carried versions shadow the image's older ones.
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site var/wheels/*.whl || { echo "run_all: wheel install failed"; exit 3; }
    export PYTHONPATH=/tmp/site:$PWD
  else
    export PYTHONPATH=$PWD
  fi
  nvidia-smi -L || true
  SHAKE=(--device cuda)
  BENCH=(--device cuda --compile --channels-last --iters 3)
  T_SHAKE=${T_SHAKE:-270} T_SD15=${T_SD15:-270} T_SDXL=${T_SDXL:-360}
  SD15=(--arch sd15 --batches 8) SDXL=(--arch sdxl --batches 4)
  T_GATE=${T_GATE:-300} GATE=(--device cuda --arch sd15 --clip ViT-L-14 --batch 8 --batches 4)
  T_HIRES=${T_HIRES:-300} HIRES=(--device cuda --arch sd15 --out 2048 --batch 1 --iters 2)
else
  PY=${PY:-.venv/bin/python}
  export PYTHONPATH=$PWD
  SHAKE=(--device cpu --tiny --skip compile)
  BENCH=(--device cpu --quick)
  T_SHAKE=${T_SHAKE:-300} T_SD15=${T_SD15:-200} T_SDXL=${T_SDXL:-200}
  SD15=(--arch tiny --batches 2) SDXL=(--arch tiny --batches 1)
  T_GATE=${T_GATE:-200} GATE=(--device cpu --arch tiny --clip tiny)
  T_HIRES=${T_HIRES:-200} HIRES=(--device cpu --quick)
fi
"$PY" -c "import torch, diffusers, transformers; print('torch', torch.__version__, \
'diffusers', diffusers.__version__, 'transformers', transformers.__version__, \
'cuda', torch.cuda.is_available())" || { echo "run_all: imports failed"; exit 3; }

status=0
for stage in "${STAGES[@]}"; do
  start=$(date +%s)
  case $stage in
    shakedown) timeout "$T_SHAKE" "$PY" tests/benchmarks/gpu/shakedown.py "${SHAKE[@]}" \
                 --json-out "$DEST/shakedown.json" >"$DEST/shakedown.log" 2>&1 ;;
    sd15) timeout "$T_SD15" "$PY" tests/benchmarks/bench_generate.py "${BENCH[@]}" "${SD15[@]}" \
            --json-out "$DEST/bench_sd15.json" >"$DEST/bench_sd15.log" 2>&1 ;;
    sdxl) timeout "$T_SDXL" "$PY" tests/benchmarks/bench_generate.py "${BENCH[@]}" "${SDXL[@]}" \
            --json-out "$DEST/bench_sdxl.json" >"$DEST/bench_sdxl.log" 2>&1 ;;
    # Issue 14: the gate on the GPU host (ViT-L-14 fp16 + watermark) vs generation alone.
    gate) timeout "$T_GATE" "$PY" tests/benchmarks/bench_host_gate.py "${GATE[@]}" \
            --json-out "$DEST/host_gate.json" >"$DEST/bench_gate.log" 2>&1 ;;
    # Optional A/B of the text-embedding cache (not in the default stages: GPU time is short).
    sd15-nocache) timeout "$T_SD15" "$PY" tests/benchmarks/bench_generate.py "${BENCH[@]}" \
            "${SD15[@]}" --no-prompt-cache --json-out "$DEST/bench_sd15-nocache.json" \
            >"$DEST/bench_sd15-nocache.log" 2>&1 ;;
    # Issue 26: images/hour at 2048² (native 512 + hires pass) vs generation alone at 512.
    hires) timeout "$T_HIRES" "$PY" tests/benchmarks/bench_hires.py "${HIRES[@]}" \
            --json-out "$DEST/hires.json" >"$DEST/bench_hires.log" 2>&1 ;;
    *) echo "run_all: unknown stage $stage (shakedown, sd15, sdxl, gate, hires, sd15-nocache)"
       exit 2 ;;
  esac
  rc=$?
  echo "== $stage: exit $rc in $(( $(date +%s) - start )) s (124 = time box hit)"
  tail -n 25 "$DEST/$( [[ $stage == shakedown ]] && echo shakedown || echo "bench_$stage").log"
  [[ $rc -ne 0 ]] && status=1
done
"$PY" tests/benchmarks/gpu/summarize.py "$DEST" || status=1
exit $status
