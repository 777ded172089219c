#!/usr/bin/env bash
# CoCo on MovieLens-1M CTR, from scratch: every run behind benchmarks/results/recsys/coco.md.
#   bash benchmarks/run_coco.sh [runs-dir]      (default runs/recsys/coco; ~3 h on 2 CPU cores, 2 queues)
# The LLM knowledge cache (runs/recsys/knowledge) is built by the first run that needs it (~30 min).
# Rows: backbone alone, KAR-style fixed template, CoCo (frozen LLM) and its ablations (no VQ prompts,
# no InfoNCE); CoCo's LoRA stage with and without gradient masking runs inside the CoCo rows.
set -u
cd "$(dirname "$0")/.."
RUNS=${1:-runs/recsys/coco}
BIN=.venv/bin
mkdir -p "$RUNS/logs"
T="$BIN/shoplab recsys train --config recsys_core/models/coco/config.yaml --set train.progress=false"
NOLORA="--set task_params.resolution.variants=[]"
run() {  # name backbone seed extra-args...
  local name=$1 backbone=$2 seed=$3; shift 3
  local out="$RUNS/${backbone}_${name}_s$seed"
  [ -f "$out/metrics.json" ] && return 0
  $T --set model_params.backbone="$backbone" --set train.seed="$seed" "$@" --out-dir "$out" \
    > "$RUNS/logs/${backbone}_${name}_s$seed.log" 2>&1
}
queue() {  # backbone
  local bb=$1
  for seed in 0 1 2; do
    run none "$bb" $seed --set model_params.mode=none $NOLORA
    run fixed "$bb" $seed --set model_params.mode=fixed $NOLORA
    run coco "$bb" $seed
    run novq "$bb" $seed --set model_params.prompt_codebook_size=1 $NOLORA
    run noinfonce "$bb" $seed --set model_params.infonce_weight=0 $NOLORA
  done
}
queue deepfm &
queue din &
wait
$BIN/python benchmarks/coco_table.py --runs "$RUNS" --out benchmarks/results/recsys/coco
