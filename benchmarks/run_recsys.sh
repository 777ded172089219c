#!/usr/bin/env bash
# Every recsys result in the README but ranking zoo I (`make recsys-zoo`), end to end (~3 CPU-hours on 2 cores
# plus ~8 for the converged GPSD grid; three queues run side by side).
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
  for tok in rqvae mmq ada_sid; do
    $T --config recsys_core/models/$tok/config.yaml --out-dir "$RUNS/${tok}_beauty" > "$RUNS/logs/$tok.log" 2>&1
    $T --config recsys_core/models/tiger/config.yaml --set data.sid_run="$RUNS/${tok}_beauty" \
       --out-dir "$RUNS/tiger_$tok" > "$RUNS/logs/tiger_$tok.log" 2>&1
  done
}

ranking_queue() {
  # GPSD at convergence: early stopping, 3 seeds with their own pretraining seeds, d = 32/64/128. DIN and DeepFM
  # (and the rest of ranking zoo I) are `make recsys-zoo` (benchmarks/run_ranking_zoo.sh).
  S3REC=$S3REC RUNS=$RUNS BIN=$BIN bash benchmarks/run_gpsd_grid.sh > "$RUNS/logs/gpsd_grid.log" 2>&1
}

# REG4Rec (benchmarks/results/recsys/reg4rec.md): MPQ with and without its anti-collapse terms, then per seed the
# SFT generator, PARS with and without MSRA, and TIGER on the same MPQ tokens (the −CRSS / −CORP rows are the
# PARS run decoded without them, by reg4rec_table.py).
reg4rec_queue() {
  $T --config recsys_core/models/mpq/config.yaml --out-dir "$RUNS/mpq_beauty" > "$RUNS/logs/mpq.log" 2>&1
  $T --config recsys_core/models/mpq/config.yaml --set model_params.expert_projections=false \
     --set model_params.diversity_weight=0 --set model_params.balance_weight=0 \
     --out-dir "$RUNS/mpq_beauty_plain" > "$RUNS/logs/mpq_plain.log" 2>&1
  R="--set data.sid_run=$RUNS/mpq_beauty"
  for seed in 0 1 2; do
    $T --config recsys_core/models/reg4rec/config.yaml $R --set train.seed=$seed \
       --out-dir "$RUNS/reg4rec_sft/seed$seed" > "$RUNS/logs/reg4rec_sft_seed$seed.log" 2>&1
    P="--config recsys_core/models/reg4rec/pars.yaml $R --set train.seed=$seed --set task_params.init_from=$RUNS/reg4rec_sft/seed$seed"
    $T $P --out-dir "$RUNS/reg4rec_pars/seed$seed" > "$RUNS/logs/reg4rec_pars_seed$seed.log" 2>&1
    $T $P --set task_params.msra_steps=0 --out-dir "$RUNS/reg4rec_pars_nomsra/seed$seed" \
       > "$RUNS/logs/reg4rec_pars_nomsra_seed$seed.log" 2>&1
    $T --config recsys_core/models/tiger/config.yaml $R --set train.seed=$seed \
       --out-dir "$RUNS/tiger_mpq/seed$seed" > "$RUNS/logs/tiger_mpq_seed$seed.log" 2>&1
  done
}

retrieval_queue & ranking_queue & reg4rec_queue & wait

# The agent tools' models: simulator logs over the sandbox catalogue, then the service.
S="$BIN/shoplab recsys train --set train.progress=false"
$BIN/shoplab recsys simulate --data-dir "$SANDBOX" --users 5000 --out "$RUNS/sim" --seed 0 --no-progress
$S --config configs/recsys/sim_din.yaml --set data.path="$RUNS/sim" --out-dir "$RUNS/din_sim"
$S --config configs/recsys/sim_rqvae.yaml --set data.path="$RUNS/sim" --out-dir "$RUNS/rqvae_sim"
$S --config configs/recsys/sim_tiger.yaml --set data.path="$RUNS/sim" --set data.sid_run="$RUNS/rqvae_sim" --out-dir "$RUNS/tiger_sim"
$S --config configs/recsys/sim_mpq.yaml --set data.path="$RUNS/sim" --out-dir "$RUNS/mpq_sim"
$S --config configs/recsys/sim_reg4rec.yaml --set data.path="$RUNS/sim" --set data.sid_run="$RUNS/mpq_sim" --out-dir "$RUNS/reg4rec_sim"
$BIN/shoplab recsys build-service --sim "$RUNS/sim" --ranker "$RUNS/din_sim" --tokenizer "$RUNS/rqvae_sim" \
  --retriever "$RUNS/tiger_sim" --reasoner "$RUNS/reg4rec_sim" --out "$RUNS/service"
$BIN/python benchmarks/bench_rank_products.py --service "$RUNS/service"
$BIN/python benchmarks/recsys_tables.py --runs "$RUNS" --out benchmarks/results/recsys --s3rec "$S3REC"
$BIN/python benchmarks/reg4rec_table.py --runs "$RUNS" --out benchmarks/results/recsys
$BIN/python benchmarks/bench_reasoning_latency.py --run "$RUNS/reg4rec_pars/seed0" --tiger "$RUNS/tiger_mpq/seed0"
