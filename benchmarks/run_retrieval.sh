#!/usr/bin/env bash
# Retrieval (benchmarks/results/recsys/retrieval/): the two-tower base with each negative sampler, ESANS and its
# ablations, CSMF against the shared-bottom and single-objective bases; MovieLens-1M, every rating, leave-one-out,
# full-catalogue ranking, early stopping on validation NDCG@10; CSMF again on the shopper simulator's log
# (csmf_sim: click → purchase over the sandbox catalogue). Finished runs are skipped, so the script resumes;
# SETTINGS / SEEDS / PARTS pick a part (two queues can run side by side: each skips the other's running runs).
#   bash benchmarks/run_retrieval.sh && .venv/bin/python benchmarks/retrieval_table.py
set -euo pipefail
RUNS=${RUNS:-runs/recsys/retrieval}
BIN=${BIN:-.venv/bin}
SEEDS=${SEEDS:-0 1 2}
SETTINGS=${SETTINGS:-negatives csmf csmf_sim}
SIM=${SIM:-runs/recsys/sim}
PARTS=${PARTS:-core ablation}
ABLATION_SEEDS=${ABLATION_SEEDS:-0}
M=recsys_core/models
T="$BIN/shoplab recsys train --set train.progress=false"
# ~37 s an epoch on 2 cores; at most 20 epochs, validation every 2, stop after 2 without improvement
E="--set train.epochs=20 --set train.eval_every=2 --set train.patience=2"

source "$(dirname "$0")/queue.sh"
run() { queue_run "$1" $T "${@:2}" $E; }  # run OUT_DIR ARGS...

negatives() {  # negatives SEED PART: uniform / in-batch / hard against ESANS; ESANS without each mechanism
  local s=$1 part=$2 Z="$RUNS/negatives" B="--config $M/two_tower/config.yaml --set train.seed=$1"
  local S="--config $M/esans/config.yaml --set train.seed=$1"
  if [ "$part" = core ]; then
    run "$Z/uniform/seed$s" $B --set model_params.negatives=uniform
    run "$Z/in_batch/seed$s" $B --set model_params.negatives=in_batch
    run "$Z/esans/seed$s" $S
    run "$Z/hard/seed$s" $B --set model_params.negatives=hard
  else
    run "$Z/esans_no_edis/seed$s" $S --set model_params.n_virtual=0
    run "$Z/esans_no_msac/seed$s" $S --set model_params.msac=false
    run "$Z/esans_no_fn_mask/seed$s" $S --set model_params.false_negative_mask=false
    run "$Z/esans_edis_positive/seed$s" $S --set model_params.edis_mix=positive
  fi
}

csmf() {  # csmf SEED PART: conversion-only and shared-bottom bases, CSMF's stage 2 (its stage 1, the click model,
  # is the uniform two-tower of the negatives setting: the same config and seed), the no-mask ablation
  local s=$1 part=$2 Z="$RUNS/csmf" C="--config $M/csmf/config.yaml --set train.seed=$1"
  local CLICK="$RUNS/negatives/uniform/seed$s"
  if [ "$part" = core ]; then
    run "$Z/conversion_only/seed$s" --config $M/two_tower/config.yaml --set train.seed=$s --set model_params.min_stars=4 --set task_params.monitor=conv_ndcg@10
    run "$Z/shared_bottom/seed$s" $C --set model_params.stage=shared_bottom
    [ -f "$CLICK/metrics.json" ] || { echo "skip $Z/csmf/seed$s: $CLICK has not finished"; return 0; }
    run "$Z/csmf/seed$s" $C --set model_params.stage=conversion --set model_params.init_from="$CLICK"
  else
    [ -f "$CLICK/metrics.json" ] || return 0
    # no mask: stage 2 fine-tunes every parameter on conversions (the click vectors drift with it)
    run "$Z/csmf_no_mask/seed$s" $C --set model_params.stage=conversion --set model_params.init_from="$CLICK" --set model_params.free_ratio=1.0
  fi
}

csmf_sim() {  # csmf_sim SEED PART: the same CSMF rows on the shopper simulator's click → purchase cascade over the
  # sandbox catalogue (5,000 users, a 20k-item universe; a conversion is a click that ended in a purchase)
  local s=$1 part=$2 Z="$RUNS/csmf_sim" C="--config $M/csmf/config.yaml --set train.seed=$1"
  local D="--set data.kind=simulated --set data.path=$SIM --set task_params.conversion_min=1"
  local CLICK="$Z/click/seed$s"
  [ -f "$SIM/items.jsonl" ] || { echo "skip csmf_sim: no simulator log at $SIM (bash benchmarks/run_gcl_mo.sh builds it)"; return 0; }
  if [ "$part" = core ]; then
    run "$CLICK" --config $M/two_tower/config.yaml --set train.seed=$s $D
    run "$Z/conversion_only/seed$s" --config $M/two_tower/config.yaml --set train.seed=$s $D --set model_params.min_stars=1 --set task_params.monitor=conv_ndcg@10
    run "$Z/shared_bottom/seed$s" $C $D --set model_params.conversion_stars=1 --set model_params.stage=shared_bottom
    [ -f "$CLICK/metrics.json" ] || { echo "skip $Z/csmf/seed$s: $CLICK has not finished"; return 0; }
    run "$Z/csmf/seed$s" $C $D --set model_params.conversion_stars=1 --set model_params.stage=conversion --set model_params.init_from="$CLICK"
  else
    [ -f "$CLICK/metrics.json" ] || return 0
    run "$Z/csmf_no_mask/seed$s" $C $D --set model_params.conversion_stars=1 --set model_params.stage=conversion --set model_params.init_from="$CLICK" --set model_params.free_ratio=1.0
  fi
}

for part in $PARTS; do
  for s in $SEEDS; do
    [ "$part" = ablation ] && [[ " $ABLATION_SEEDS " != *" $s "* ]] && continue
    for setting in $SETTINGS; do "$setting" "$s" "$part"; done
  done
done
