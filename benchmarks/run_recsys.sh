#!/usr/bin/env bash
# Every recsys result in the README, end to end (~2 CPU-hours on 2 cores; two queues run side by side).
#   S3REC=../shared/data/s3rec SANDBOX=runs/sb200k bash benchmarks/run_recsys.sh
# Amazon Beauty (S3-Rec files, read by path): SASRec baseline; RQ-VAE / MMQ / ADA-SID / MPQ tokenizers, each
# followed by TIGER-style generative retrieval; GPSD pretraining at d = 32/64/128 and the CTR grid (scratch,
# full transfer, sparse transfer + freezing), DIN and DeepFM. Simulator logs over the sandbox: the models
# behind the agent tools, the service, and the rank_products latency benchmark. Then the tables.
set -euo pipefail
S3REC=${S3REC:-../shared/data/s3rec}
SANDBOX=${SANDBOX:-runs/sandbox}
RUNS=${RUNS:-runs/recsys}
BIN=${BIN:-.venv/bin}
mkdir -p "$RUNS/logs"
T="$BIN/shoplab recsys train --set train.progress=false --set data.path=$S3REC"

retrieval_queue() {
  $T --config recsys_core/models/sasrec/config.yaml --out-dir "$RUNS/sasrec_beauty/seed0" > "$RUNS/logs/sasrec.log" 2>&1
  for tok in rqvae mmq ada_sid mpq; do
    $T --config recsys_core/models/$tok/config.yaml --out-dir "$RUNS/${tok}_beauty" > "$RUNS/logs/$tok.log" 2>&1
    $T --config recsys_core/models/tiger/config.yaml --set data.sid_run="$RUNS/${tok}_beauty" \
       --out-dir "$RUNS/tiger_$tok" > "$RUNS/logs/tiger_$tok.log" 2>&1
  done
}

ranking_queue() {
  for d in 32 64 128; do
    $T --config recsys_core/models/gpsd/pretrain_d$d.yaml --out-dir "$RUNS/gpsd_pretrain_d$d" > "$RUNS/logs/gpsd_pretrain_d$d.log" 2>&1
  done
  $T --config recsys_core/models/din/config.yaml --out-dir "$RUNS/din_beauty" > "$RUNS/logs/din.log" 2>&1
  $T --config recsys_core/models/deepfm/config.yaml --out-dir "$RUNS/deepfm_beauty" > "$RUNS/logs/deepfm.log" 2>&1
  for d in 32 64 128; do
    C="--config recsys_core/models/gpsd/config.yaml --set model_params.hidden=$d"
    P="--set model_params.transfer.from_run=$RUNS/gpsd_pretrain_d$d"
    $T $C --out-dir "$RUNS/gpsd_d${d}_nt" > "$RUNS/logs/gpsd_d${d}_nt.log" 2>&1
    $T $C $P --set model_params.transfer.mode=full --out-dir "$RUNS/gpsd_d${d}_ft" > "$RUNS/logs/gpsd_d${d}_ft.log" 2>&1
    $T $C $P --set model_params.transfer.mode=sparse --set model_params.transfer.freeze_sparse=true \
       --out-dir "$RUNS/gpsd_d${d}_stsf" > "$RUNS/logs/gpsd_d${d}_stsf.log" 2>&1
  done
}

retrieval_queue & ranking_queue & wait

# The agent tools' models: simulator logs over the sandbox catalogue, then the service.
S="$BIN/shoplab recsys train --set train.progress=false"
$BIN/shoplab recsys simulate --data-dir "$SANDBOX" --users 5000 --out "$RUNS/sim" --seed 0 --no-progress
$S --config configs/recsys/sim_din.yaml --set data.path="$RUNS/sim" --out-dir "$RUNS/din_sim"
$S --config configs/recsys/sim_rqvae.yaml --set data.path="$RUNS/sim" --out-dir "$RUNS/rqvae_sim"
$S --config configs/recsys/sim_tiger.yaml --set data.path="$RUNS/sim" --set data.sid_run="$RUNS/rqvae_sim" --out-dir "$RUNS/tiger_sim"
$BIN/shoplab recsys build-service --sim "$RUNS/sim" --ranker "$RUNS/din_sim" --tokenizer "$RUNS/rqvae_sim" \
  --retriever "$RUNS/tiger_sim" --out "$RUNS/service"
$BIN/python benchmarks/bench_rank_products.py --service "$RUNS/service"
$BIN/python benchmarks/recsys_tables.py --runs "$RUNS" --out benchmarks/results/recsys
