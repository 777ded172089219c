#!/usr/bin/env bash
# GCL-MO (benchmarks/results/recsys/retrieval/): personalised e-commerce search retrieval over the sandbox
# catalogue. Builds what it needs when missing: the sandbox (200k products), the shopper simulator's log
# (5,000 users over a 20k-item universe) and long-tail queries with gold products (the rewrite data's
# generator, 4,000 training + 300 held-out queries); then GCL-MO and its ablations. Finished runs are skipped.
#   bash benchmarks/run_gcl_mo.sh && .venv/bin/python benchmarks/retrieval_table.py
set -euo pipefail
RUNS=${RUNS:-runs/recsys/retrieval}
BIN=${BIN:-.venv/bin}
SANDBOX=${SANDBOX:-runs/sandbox}
SIM=${SIM:-runs/recsys/sim}
QUERIES=${QUERIES:-runs/recsys/gcl_mo/queries}
SEEDS=${SEEDS:-0 1 2}
ABLATION_SEEDS=${ABLATION_SEEDS:-0}
Z="$RUNS/gcl_mo"

[ -f "$SANDBOX/manifest.json" ] || $BIN/shoplab sandbox build --data-dir "$SANDBOX" --products 200000 --seed 0 \
  --tasks data/shoppingbench/synthesize_product_dev.jsonl --tasks data/shoppingbench/synthesize_shop_dev.jsonl \
  --tasks data/shoppingbench/synthesize_voucher_dev.jsonl --tasks data/shoppingbench/synthesize_web_simpleqa_dev.jsonl
[ -f "$SIM/items.jsonl" ] || $BIN/shoplab recsys simulate --data-dir "$SANDBOX" --users 5000 --out "$SIM" --seed 0 --no-progress
[ -f "$QUERIES/data/queries_heldout.jsonl" ] || $BIN/shoplab rewrite build-data --data-dir "$SANDBOX" \
  --run-dir "$QUERIES" --set data.llm_candidate_queries=0 --set data.n_train_queries=4000

source "$(dirname "$0")/queue.sh"
run() {  # run OUT_DIR ARGS...
  queue_run "$1" $BIN/shoplab recsys train --config recsys_core/models/gcl_mo/config.yaml --set train.progress=false \
    --set data.path="$SIM" --set task_params.queries_dir="$QUERIES/data" "${@:2}"
}

for s in $SEEDS; do
  run "$Z/full/seed$s" --set train.seed=$s
done
for s in $ABLATION_SEEDS; do
  run "$Z/pers_only/seed$s" --set train.seed=$s --set 'model_params.objectives=[personalization]'
  run "$Z/rel_only/seed$s" --set train.seed=$s --set 'model_params.objectives=[relevance]'
  run "$Z/standard_loss/seed$s" --set train.seed=$s --set model_params.contrastive=standard
  run "$Z/no_graph/seed$s" --set train.seed=$s --set model_params.graph_layers=0
  run "$Z/rel_weight_3/seed$s" --set train.seed=$s --set model_params.relevance_weight=3.0
done
