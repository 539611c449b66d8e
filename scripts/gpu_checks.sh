#!/usr/bin/env bash
# The GPU checks of one session, in one go (issue 17): `make test-gpu`'s tests, the four
# benchmarks with --device cuda, and optionally a grid whose cells several runners share on the
# GPU. For a machine that already has torch/lightning/scipy (a CUDA image) but not our other
# dependencies: WHEELS (a folder of wheels) is installed into a private site folder first.
#
#   OUT=results WHEELS=.whl GRID=recipes/experiments/X.yaml RUNNERS=6 bash scripts/gpu_checks.sh
#
# Every stage has its own time limit and writes its log under OUT, so a slow stage costs only
# its own results. ORTHO_LIGHTNING_DATA must name the MNIST folder when GRID is set.
set -u
OUT=${OUT:-gpu_results}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
export WANDB_MODE=offline PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
if [ -n "${WHEELS:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  $PY -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
} >"$OUT/tests.log" 2>&1

start_grid() {  # RUNNERS runners share the grid's output folder (each takes free cells)
  for i in $(seq 1 "${RUNNERS:-1}"); do
    timeout "${GRID_LIMIT:-360}" $PY -m ortho_lightning.cli experiment "$GRID" --out /tmp/grid \
      --no-progress >"/tmp/runner_$i.log" 2>&1 &
    sleep 2
  done
}
[ -n "${GRID:-}" ] && start_grid

timeout "${TEST_LIMIT:-240}" $PY -m pytest -m cuda -rs -p no:cacheprovider tests/test_cuda.py \
  >>"$OUT/tests.log" 2>&1
echo "pytest exit $?" >>"$OUT/tests.log"

if [ -n "${GRID:-}" ]; then
  wait
  # one more runner: every cell is done (or failed), so it only writes the table and report
  timeout 120 $PY -m ortho_lightning.cli experiment "$GRID" --out /tmp/grid --no-progress \
    >/tmp/runner_report.log 2>&1
  grep -h -v "^\s*$" /tmp/runner_*.log | grep -v "LightningCLI's args" | tail -300 \
    >"$OUT/grid_runners.log"
  cp /tmp/grid/results.csv "$OUT/grid_results.csv" 2>/dev/null
  cp /tmp/grid/summary.md "$OUT/grid_summary.md" 2>/dev/null
  for d in /tmp/grid/cells/*/; do  # cells cut by GRID_LIMIT: what their logger had flushed
    [ -e "$d/DONE" ] || { echo "# partial $(basename "$d")"; cat "$d"/csv/run/metrics.csv; }
  done >"$OUT/grid_partial.csv" 2>/dev/null
fi

cd benchmarks || exit 1
timeout "${BENCH_LIMIT:-120}" $PY bench_fisher.py --device cuda --threads 1 \
  --sections exact,trace,topk,cnn >"$OUT/bench_fisher.log" 2>&1
timeout 45 $PY bench_ntk.py --device cuda --threads 1 >"$OUT/bench_ntk.log" 2>&1
{ timeout 45 $PY bench_constraints.py --device cuda --threads 1
  timeout 60 $PY bench_monitors.py --device cuda --threads 1 --repeats 2; } \
  >"$OUT/bench_training.log" 2>&1
exit 0
