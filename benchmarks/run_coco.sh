#!/usr/bin/env bash
# CoCo on MovieLens-1M CTR, from scratch: every run behind benchmarks/results/recsys/coco.md.
#   bash benchmarks/run_coco.sh [runs-dir] [all|grid|served|table]   (default runs/recsys/coco, all;
#   ~3 h on 2 CPU cores: the grid's two queues and the served ranker run side by side; finished runs are kept)
# The LLM knowledge cache (runs/recsys/knowledge) is built by the first run that needs it (~30 min).
# Rows: backbone alone, KAR-style fixed template, CoCo (frozen LLM) and its ablations (no VQ prompts,
# no InfoNCE); CoCo's LoRA stage with and without gradient masking runs inside the CoCo rows. Then the
# served ranker: CoCo and DIN on the simulator's logs, rank_products latency, and the heuristic agent's
# ASR on the 312 dev tasks without a ranker, re-ranking with DIN, re-ranking with CoCo.
set -u
cd "$(dirname "$0")/.."
RUNS=${1:-runs/recsys/coco}
PART=${2:-all}
BIN=.venv/bin
mkdir -p "$RUNS/logs"
T="$BIN/shoplab recsys train --config recsys_core/models/coco/config.yaml --set train.progress=false"
NOLORA="--set task_params.resolution.variants=[]"
run() {  # name backbone seed extra-args...   (skips a finished run, and one another process is running)
  local name=$1 backbone=$2 seed=$3; shift 3
  local out="$RUNS/${backbone}_${name}_s$seed"
  [ -f "$out/metrics.json" ] && return 0
  pgrep -f -- "--out-dir $out\$" > /dev/null && return 0
  $T --set model_params.backbone="$backbone" --set train.seed="$seed" "$@" --out-dir "$out" \
    > "$RUNS/logs/${backbone}_${name}_s$seed.log" 2>&1
}
queue() {  # backbone, then row:seed items in priority order (so that a cut-short grid still has every row)
  local bb=$1; shift
  for item in "$@"; do
    local row=${item%:*} seed=${item#*:}
    case $row in
      none) run none "$bb" "$seed" --set model_params.mode=none $NOLORA ;;
      fixed) run fixed "$bb" "$seed" --set model_params.mode=fixed $NOLORA ;;
      coco) run coco "$bb" "$seed" ;;  # + the LoRA stage, with and without gradient masking
      coco_nolora) run coco "$bb" "$seed" $NOLORA ;;
      novq) run novq "$bb" "$seed" --set model_params.prompt_codebook_size=1 $NOLORA ;;
      noinfonce) run noinfonce "$bb" "$seed" --set model_params.infonce_weight=0 $NOLORA ;;
    esac
  done
}
served() {  # CoCo behind rank_products: simulator logs, CoCo and DIN (the same pipeline, mode none), latency, agent
  local sb=${SANDBOX:-runs/sandbox} sim=runs/recsys/sim out=benchmarks/results/recsys/coco
  [ -f "$sb/manifest.json" ] || $BIN/shoplab sandbox build --data-dir "$sb" --products 200000 --seed 0 \
    --tasks data/shoppingbench/synthesize_product_dev.jsonl --tasks data/shoppingbench/synthesize_shop_dev.jsonl \
    --tasks data/shoppingbench/synthesize_voucher_dev.jsonl --tasks data/shoppingbench/synthesize_web_simpleqa_dev.jsonl
  [ -f "$sim/items.jsonl" ] || $BIN/shoplab recsys simulate --data-dir "$sb" --users 5000 --out "$sim" --seed 0 --no-progress
  local S="$BIN/shoplab recsys train --config configs/recsys/sim_coco.yaml --set train.progress=false --set data.path=$sim"
  [ -f "$RUNS/sim_coco/metrics.json" ] || $S --out-dir "$RUNS/sim_coco" > "$RUNS/logs/sim_coco.log" 2>&1
  [ -f "$RUNS/sim_din/metrics.json" ] || $S --set model_params.mode=none --out-dir "$RUNS/sim_din" > "$RUNS/logs/sim_din.log" 2>&1
  $BIN/shoplab recsys build-service --sim "$sim" --ranker "$RUNS/sim_coco" --out "$RUNS/service_coco" > /dev/null
  $BIN/shoplab recsys build-service --sim "$sim" --ranker "$RUNS/sim_din" --out "$RUNS/service_din" > /dev/null
  $BIN/python benchmarks/bench_rank_products.py --service "$RUNS/service_coco" --baseline-ranker "$RUNS/sim_din" \
    --out "$out/rank_latency.json"
  local tasks="--tasks data/shoppingbench/synthesize_product_dev.jsonl --tasks data/shoppingbench/synthesize_shop_dev.jsonl"
  tasks="$tasks --tasks data/shoppingbench/synthesize_voucher_dev.jsonl --tasks data/shoppingbench/synthesize_web_simpleqa_dev.jsonl"
  $BIN/shoplab bench run --data-dir "$sb" $tasks --agent heuristic --out "$RUNS/agent_heuristic" > /dev/null
  $BIN/shoplab bench run --data-dir "$sb" $tasks --agent heuristic --recsys-service "$RUNS/service_din" \
    --out "$RUNS/agent_heuristic_din" > /dev/null
  $BIN/shoplab bench run --data-dir "$sb" $tasks --agent heuristic --recsys-service "$RUNS/service_coco" \
    --out "$RUNS/agent_heuristic_coco" > /dev/null
  $BIN/shoplab bench report "$RUNS/agent_heuristic" "$RUNS/agent_heuristic_din" "$RUNS/agent_heuristic_coco" \
    --out "$out/agent_rerank"
}
if [ "$PART" = all ] || [ "$PART" = grid ]; then
  # DeepFM: every row over 3 seeds; the LoRA stage (~10 CPU-min per variant) on seed 0. DIN: the main rows.
  queue deepfm none:0 none:1 none:2 coco:0 coco_nolora:1 coco_nolora:2 fixed:0 novq:0 noinfonce:0 \
    fixed:1 novq:1 noinfonce:1 fixed:2 novq:2 noinfonce:2 &
  queue din coco_nolora:0 none:0 coco_nolora:1 none:1 fixed:0 coco_nolora:2 none:2 fixed:1 fixed:2 &
fi
if [ "$PART" = all ] || [ "$PART" = served ]; then served & fi
wait
if [ "$PART" = all ] || [ "$PART" = table ]; then
  $BIN/python benchmarks/coco_table.py --runs "$RUNS" --out benchmarks/results/recsys/coco
fi
