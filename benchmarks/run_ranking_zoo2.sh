#!/usr/bin/env bash
# Ranking zoo II (benchmarks/results/recsys/zoo2/): the five settings of issue 21, 3 seeds each, early stopping on
# validation. Finished runs are skipped, so the script resumes; SETTINGS / SEEDS pick a part (two queues can run
# side by side on different settings).
#   S3REC=../shared/data/s3rec bash benchmarks/run_ranking_zoo2.sh && .venv/bin/python benchmarks/ranking_zoo2_table.py
set -euo pipefail
S3REC=${S3REC:-../shared/data/s3rec}
RUNS=${RUNS:-runs/recsys/zoo2}
BIN=${BIN:-.venv/bin}
SEEDS=${SEEDS:-0 1 2}
SETTINGS=${SETTINGS:-longseq heterrec gsvr dmae cdanet}
LENGTHS=${LENGTHS:-50 200 1000}
FIRST_SEED_ONLY_LENGTHS=${FIRST_SEED_ONLY_LENGTHS:-1000}  # L = 1000 costs ~4x L = 200: one seed unless asked
ABLATION_LENGTHS=${ABLATION_LENGTHS:-200}
# HeterRec on Beauty is ~1 CPU-hour a run here (12k-item full softmax through the token encoder): opt in
HETERREC_DATASETS=${HETERREC_DATASETS:-ml1m}
M=recsys_core/models
T="$BIN/shoplab recsys train --set train.progress=false"

source "$(dirname "$0")/queue.sh"
run() { queue_run "$1" $T "${@:2}"; }  # run OUT_DIR ARGS...

ML="--set data.kind=movielens --set data.dataset=ml-1m --set data.path=null --set data.user_sample=1000"  # the zoo's DIN config is Beauty's
DIN="--config $M/din/config.yaml $ML --set train.epochs=6 --set train.patience=1"

longseq() {  # longseq SEED PART: full softmax and DIN-style target attention against the low-rank one, per length
  local s=$1 part=$2 L C="--config $M/lrta/config.yaml"
  for L in $LENGTHS; do
    local Z="$RUNS/longseq/L$L" D="--set data.max_len=$L --set train.seed=$s"
    [ "$s" != "${SEEDS%% *}" ] && [[ " $FIRST_SEED_ONLY_LENGTHS " == *" $L "* ]] && continue
    [ "$part" = ablation ] && [[ " $ABLATION_LENGTHS " != *" $L "* ]] && continue
    if [ "$part" = core ]; then
      run "$Z/lrta/seed$s" $C $D
      run "$Z/full/seed$s" $C $D --set model_params.rank=0
      # DIN's activation unit runs an MLP per behaviour and candidate: at L = 1000 only the latency bench has it
      [ "$L" = 1000 ] || run "$Z/din/seed$s" $DIN $D
    else
      run "$Z/lrta_no_approx/seed$s" $C $D --set model_params.approx_weight=0
    fi
  done
}

heterrec() {  # heterrec SEED PART: against SASRec at equal size, Beauty and ML-1M
  local s=$1 part=$2 ds args
  for ds in $HETERREC_DATASETS; do
    local Z="$RUNS/heterrec/$ds" D="--set train.seed=$s"
    if [ "$ds" = beauty ]; then args="--set data.path=$S3REC"
    # ML-1M: the last 50 ratings (not 200) and at most 12 epochs: a full softmax over 3,883 movies at every
    # position, 3 steps ahead, is ~5 CPU-minutes an epoch at 200
    else args="--set data.kind=movielens --set data.dataset=ml-1m --set data.path=null --set data.max_len=50 --set model_params.max_attributes=7 --set train.epochs=12 --set train.eval_every=1 --set train.patience=2"; fi
    local H="--config $M/heterrec/config.yaml $args $D"
    if [ "$part" = core ]; then
      run "$Z/heterrec/seed$s" $H
      run "$Z/sasrec/seed$s" --config $M/sasrec/config.yaml ${args/--set model_params.max_attributes=7/} $D
    else
      run "$Z/heterrec_no_htfl/seed$s" $H --set model_params.heterogeneous=false
      run "$Z/heterrec_no_token_level/seed$s" $H --set model_params.token_attention=false
      run "$Z/heterrec_no_lmp/seed$s" $H --set model_params.predict_steps=1
    fi
  done
}

gsvr() {  # gsvr SEED PART: the multi-scenario base, GSVR with the global prior, GSVR with N(0, I)
  local s=$1 part=$2 Z="$RUNS/gsvr" G="--config $M/gsvr/config.yaml --set train.seed=$1"
  if [ "$part" = core ]; then
    run "$Z/base/seed$s" $G --set model_params.variational=false
    run "$Z/gsvr/seed$s" $G
  else
    run "$Z/gsvr_standard_prior/seed$s" $G --set model_params.prior=standard
  fi
}

dmae() {  # dmae SEED PART: DMAE, and without its guidance / its text modality (its DIN base is longseq's L = 50 run)
  local s=$1 part=$2 Z="$RUNS/dmae" G="--config $M/dmae/config.yaml --set train.seed=$1"
  if [ "$part" = core ]; then
    run "$Z/dmae/seed$s" $G
  else
    run "$Z/dmae_no_guidance/seed$s" $G --set model_params.guide_weight=0
    run "$Z/dmae_no_text/seed$s" $G --set "model_params.modalities=[behaviour,attributes]"
  fi
}

cdanet() {  # cdanet SEED PART: target-only, shared-embedding transfer, CDAnet (stage 1 then 2)
  local s=$1 part=$2 Z="$RUNS/cdanet" D="--set train.seed=$1" A="--config $M/cdanet/config.yaml"
  if [ "$part" = core ]; then
    run "$Z/target_only/seed$s" $A $D --set model_params.init_from=null
    run "$Z/shared_embedding/seed$s" $A $D --set model_params.init_from=null --set data.candidate_groups=null \
      --set "data.eval_candidate_groups=[family]"
    run "$Z/translation/seed$s" --config $M/cdanet/translation.yaml $D
    run "$Z/cdanet/seed$s" $A $D --set model_params.init_from="$Z/translation/seed$s"
  else
    run "$Z/translation_no_cross/seed$s" --config $M/cdanet/translation.yaml $D --set model_params.cross_supervision=false
    run "$Z/cdanet_no_cross/seed$s" $A $D --set model_params.init_from="$Z/translation_no_cross/seed$s"
  fi
}

# seed 0 of every core row, then its ablations (seed 0 only unless ABLATION_SEEDS says more), then seeds 1-2
FIRST=${SEEDS%% *}
ABLATION_SEEDS=${ABLATION_SEEDS:-$FIRST}
for setting in $SETTINGS; do "$setting" "$FIRST" core; done
for s in $ABLATION_SEEDS; do for setting in $SETTINGS; do "$setting" "$s" ablation; done; done
for s in $SEEDS; do
  [ "$s" = "$FIRST" ] && continue
  for setting in $SETTINGS; do "$setting" "$s" core; done
done
