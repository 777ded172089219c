#!/usr/bin/env bash
# The shipped student (data/models/smollm2-135m-shoplab-student) from scratch, on the 2 CPU cores of this
# machine: three warm-started SFT passes of 240 product episodes each over one teacher run, its evaluation
# beside the heuristic agent on the same dev tasks, and the packaging (card and metrics written from the runs).
#   bash benchmarks/train_student.sh            # ~3 h here: pass 1 ~55 min, passes 2-3 ~50 min each, evals ~25 min
# Every step skips what is done already (the distill pipeline's own rule), so a killed run continues.
# Needs the 200k-product sandbox `make run` builds (runs/sandbox).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
SB=${SB:-runs/sandbox}
TASKS="data/shoppingbench/synthesize_product_dev.jsonl data/shoppingbench/synthesize_shop_dev.jsonl
       data/shoppingbench/synthesize_voucher_dev.jsonl data/shoppingbench/synthesize_web_simpleqa_dev.jsonl"
common=(--config configs/distill_smollm2.yaml --set "data_dir=$SB" --set "data.intents=[product]"
        --set data.max_examples=240)

# Pass 1: the grounded scripted teacher on 1,000 generated product tasks and 300 shop tasks, rejection
# sampling, SFT of a fresh LoRA adapter on SmolLM2-135M-Instruct.
$BIN/shoplab train distill "${common[@]}" --set run_dir=runs/distill_default --set teacher.n_shop=300 \
    --steps teacher,data,sft
# Pass 2: the next 240 product episodes of the same shuffle, continuing pass 1's adapter.
$BIN/shoplab train distill "${common[@]}" --set run_dir=runs/distill_student2 \
    --set "teacher.run_dirs=[runs/distill_default/teacher]" --set data.skip_examples=240 \
    --set sft.init_adapter=runs/distill_default/sft/adapter --steps data,sft
# Pass 3: 240 episodes neither earlier pass trained on, half of them with an error-recovery turn (a failed
# first search of a kind the student got wrong, left out of the loss); longer episodes fit.
$BIN/shoplab train distill "${common[@]}" --set run_dir=runs/distill_student3 \
    --set "teacher.run_dirs=[runs/distill_default/teacher]" --set data.max_tokens=1700 --set sft.max_length=1800 \
    --set "data.exclude_tasks_of=[runs/distill_default/data/sft,runs/distill_student2/data/sft]" \
    --set data.error_recovery=0.5 --set sft.init_adapter=runs/distill_student2/sft/adapter --steps data,sft

# Package at rank 8 (the file stays under 5 MiB) into a scratch folder, evaluate that folder as shipped.
$BIN/python benchmarks/package_student.py --run-dir runs/distill_student3 --rank 8 --out runs/student_candidate
run_eval() {  # NAME AGENT INTENTS LIMIT [ARGS...]
    local name=$1 agent=$2 intents=$3 limit=$4; shift 4
    [ -f "runs/eval/$name/summary.json" ] && return 0
    local flags=()
    for intent in $intents; do flags+=(--intent "$intent"); done
    # shellcheck disable=SC2086
    $BIN/shoplab bench run --data-dir "$SB" --tasks $TASKS --profile shoplab "${flags[@]}" --limit "$limit" \
        --agent "$agent" --out "runs/eval/$name" "$@"
}
student=(--llm-config configs/agents/react_student_vllm_cpu.yaml --model runs/student_candidate --parallel 8)
run_eval student_product24 react product 24 "${student[@]}"
# The same after two passes, for the record of what pass 3 changed.
[ -d runs/student2_candidate ] || $BIN/python benchmarks/package_student.py --run-dir runs/distill_student2 --rank 8 \
    --out runs/student2_candidate
run_eval student2_product24 react product 24 --llm-config configs/agents/react_student_vllm_cpu.yaml \
    --model runs/student2_candidate --parallel 8
run_eval heuristic_product24 heuristic product 24
run_eval heuristic_price_product24 heuristic_price product 24
# The other intents, 6 tasks each: the student was not trained on them (it loops to its step limit, ~10 min).
run_eval student_others6 react "shop voucher web" 6 "${student[@]}"
run_eval heuristic_others6 heuristic "shop voucher web" 6

NOTE="On make run's six product tasks (the first six of the 24 above) it solves 2 and the heuristic 1; on the first
24 it is level with the heuristic (5 each, on different tasks) and below the rule that applies the request's price.
Its first searches are well-formed now; its mistakes are choices: another number of the request as the price, a
price where none is asked, a requested service left out. On the intents it was not trained on it loops to its step
limit (voucher 1 of 6, like the heuristic; shop and web 0), so make run runs it on product tasks only."
$BIN/python benchmarks/package_student.py --run-dir runs/distill_student3 --rank 8 \
    --eval student=runs/eval/student_product24 --eval heuristic=runs/eval/heuristic_product24 \
    --eval heuristic_price=runs/eval/heuristic_price_product24 --eval student_after_2_passes=runs/eval/student2_product24 \
    --eval student_other_intents=runs/eval/student_others6 --eval heuristic_other_intents=runs/eval/heuristic_others6 \
    --note "$NOTE"
mkdir -p benchmarks/results/default_agent
for run in runs/eval/*product24 runs/eval/*_others6; do
    cp "$run/summary.json" "benchmarks/results/default_agent/$(basename "$run").summary.json"
done
