"""Device/dtype resolution, the one model-reference resolver and loader, and recsys evaluation
following the model's device (checked on the `meta` device: no GPU needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from shoplab_core import devices
from shoplab_core.devices import module_device, resolve_device, resolve_dtype
from shoplab_core.models import (
    ModelRefError,
    ModelSource,
    load_causal_lm,
    load_tokenizer,
    resolve_model_ref,
    resolve_model_source,
)

MODELS_DIR = Path(__file__).resolve().parents[2] / "recsys_core" / "models"
SMOKE_CONFIGS = sorted(MODELS_DIR.glob("*/smoke.yaml"))


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def fake_cuda(monkeypatch):
    """A machine that claims one CUDA GPU (nothing is allocated on it in these tests)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


# -- devices ------------------------------------------------------------------------------------
def test_auto_is_cuda_when_present_else_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device().type == expected
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected


def test_auto_without_cuda_is_cpu_float32(no_cuda):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_dtype("auto", "auto") is torch.float32
    assert resolve_dtype() is torch.float32


def test_explicit_devices(fake_cuda):
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="1 CUDA device"):
        resolve_device("cuda:3")


@pytest.mark.parametrize("spec", ["gpu", "tpu", "", "cuda:x", "cuda:", "cpu:0", "auto-ish"])
def test_nonsense_device_is_a_value_error(spec):
    with pytest.raises(ValueError, match="device"):
        resolve_device(spec)


@pytest.mark.parametrize("spec", ["cuda", "cuda:0"])
def test_cuda_without_cuda_says_so(no_cuda, spec):
    with pytest.raises(ValueError, match="CUDA.*device: auto"):
        resolve_device(spec)


def test_mps_without_mps_says_so(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="MPS"):
        resolve_device("mps")


def test_dtypes(no_cuda):
    assert resolve_dtype("float32", "cpu") is torch.float32
    assert resolve_dtype("bfloat16", "cpu") is torch.bfloat16  # explicit: honoured on any device
    assert resolve_dtype("bf16") is torch.bfloat16
    assert resolve_dtype("float16") is torch.float16
    assert resolve_dtype("torch.float16") is torch.float16
    assert resolve_dtype(torch.bfloat16) is torch.bfloat16
    for bad in ("int8", "float64", "fp8", "banana"):
        with pytest.raises(ValueError, match="dtype"):
            resolve_dtype(bad)
    with pytest.raises(ValueError, match="precision"):
        resolve_dtype(torch.int64)
    with pytest.raises(ValueError, match="CUDA"):
        resolve_dtype("auto", "cuda")  # the device is checked too


def test_auto_dtype_is_bf16_only_on_cuda_with_bf16(fake_cuda, monkeypatch):
    monkeypatch.setattr(devices, "_bf16_supported", lambda device: device.type == "cuda")
    assert resolve_dtype("auto", "cuda") is torch.bfloat16
    assert resolve_dtype("auto", "auto") is torch.bfloat16
    assert resolve_dtype("auto", "cpu") is torch.float32
    monkeypatch.setattr(devices, "_bf16_supported", lambda device: False)  # e.g. a T4
    assert resolve_dtype("auto", "cuda") is torch.float32


def test_module_device():
    assert module_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert module_device(torch.nn.Linear(2, 2, device="meta")) == torch.device("meta")
    assert module_device(torch.nn.ReLU()) == torch.device("cpu")  # neither parameters nor buffers
    only_buffer = torch.nn.Module()
    only_buffer.register_buffer("b", torch.zeros(2, device="meta"))
    assert module_device(only_buffer) == torch.device("meta")


def test_training_placement_follows_the_device(no_cuda, monkeypatch):
    from training.stages import _placement, _trainer_args

    assert _placement("auto", None) == (True, False)  # this CPU: unchanged (use_cpu, no bf16)
    assert _placement("cpu", True) == (True, True)  # explicit bf16 autocast on a CPU stays possible
    args = _trainer_args(Path("out"), 1.0, 1e-4, 2, 1, 1, 10, 0)
    assert args["use_cpu"] is True and args["bf16"] is False
    with pytest.raises(ValueError, match="CUDA"):
        _placement("cuda", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(devices, "_bf16_supported", lambda device: True)
    assert _placement("auto", None) == (False, True)
    assert _placement("auto", False) == (False, False)


def test_configs_default_to_auto():
    from agents.llm.base import LLMConfig
    from recsys_core.config import TrainSettings
    from rewrite.config import EvalSettings, FeedbackSettings
    from training.stage_config import AlignStageConfig, GRPOStageConfig, SFTStageConfig

    assert (LLMConfig().device, LLMConfig().dtype) == ("auto", "auto")
    assert TrainSettings().device == "auto"
    assert FeedbackSettings().device == EvalSettings().device == "auto"
    for cfg in (SFTStageConfig(), AlignStageConfig(), GRPOStageConfig()):
        assert cfg.device == "auto"
    assert SFTStageConfig().bf16 is None and AlignStageConfig().bf16 is None
    assert GRPOStageConfig().bf16 is True  # GRPO kept its explicit default


def test_recsys_trainer_refuses_cuda_without_cuda(no_cuda, tmp_path):
    from recsys_core import ExperimentConfig, Trainer

    cfg = ExperimentConfig.from_yaml(MODELS_DIR / "sasrec" / "smoke.yaml", ["train.progress=false"])
    cfg.train.device = "cuda"
    with pytest.raises(ValueError, match="CUDA"):
        Trainer(cfg, tmp_path / "run").fit()


# -- model references ---------------------------------------------------------------------------
def _model_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def test_resolve_model_ref(tmp_path, monkeypatch):
    import shoplab_core.models as models

    monkeypatch.setattr(models, "prepare_default_model", lambda *a, **k: tmp_path / "prepared")
    for alias in ("smollm2-135m-instruct", "SmolLM2", "default"):
        assert resolve_model_ref(alias) == str(tmp_path / "prepared")
    folder = _model_folder(tmp_path / "m")
    assert resolve_model_ref(folder) == str(folder)
    with pytest.raises(ModelRefError, match="does not exist"):
        resolve_model_ref(str(tmp_path / "missing"))
    # A relative path that does not exist is a path, not a hub id: it never reaches the hub resolver
    # (whose "Repo id must be in the form ..." says nothing about the missing folder).
    with pytest.raises(ModelRefError, match="model folder runs/rewrite/align_pro does not exist"):
        resolve_model_ref("runs/rewrite/align_pro")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelRefError, match="no config.json"):
        resolve_model_ref(tmp_path / "empty")


def test_stage_and_adapter_folders(tmp_path):
    base = _model_folder(tmp_path / "base")
    merged = _model_folder(tmp_path / "stage" / "merged")
    stage = tmp_path / "stage"
    (stage / "adapter").mkdir()
    (stage / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    (stage / "stage.json").write_text(json.dumps({"base_model": str(base), "adapter": "adapter",
                                                  "merged": str(merged)}))
    assert resolve_model_ref(stage) == str(merged)
    assert resolve_model_source(stage).base == str(merged) and resolve_model_source(stage).adapter is None
    # a LoRA-only stage: base + adapter for loaders, refused where one model is needed
    (stage / "stage.json").write_text(json.dumps({"base_model": str(base), "adapter": "adapter", "merged": None}))
    source = resolve_model_source(stage)
    assert (source.base, source.adapter) == (str(base), str(stage / "adapter"))
    with pytest.raises(ValueError, match="no merged model"):
        resolve_model_ref(stage)
    source = resolve_model_source(stage / "adapter")
    assert (source.base, source.adapter) == (str(base), str(stage / "adapter"))
    with pytest.raises(ModelRefError, match="LoRA adapter"):
        resolve_model_ref(stage / "adapter")
    # the old entry points answer the same
    from rewrite.model import resolve_stage
    from training.stages import stage_policy_model

    assert resolve_stage(stage) == (str(base), str(stage / "adapter"))
    with pytest.raises(ValueError, match="merge=True"):
        stage_policy_model(stage)


def test_agents_resolve_model_reports_llm_errors(tmp_path):
    from agents.llm import LLMError, resolve_model

    with pytest.raises(LLMError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))


# -- the loader ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from transformers import AutoTokenizer

    from tests.tiny_lm import build_tiny_chat_model

    out = build_tiny_chat_model(tmp_path_factory.mktemp("tiny") / "m",
                                ["red shoes for running", "blue phone case", "a cheap laptop bag"] * 20,
                                vocab_size=300, hidden_size=32, num_layers=1)
    tok = AutoTokenizer.from_pretrained(out)
    tok.pad_token = None  # the pad-token fallback is what the loader must add
    tok.save_pretrained(out)
    return out


def test_load_tokenizer_adds_the_pad_token(tiny_model):
    tok = load_tokenizer(tiny_model, padding_side="left")
    assert tok.pad_token == tok.eos_token == "<|im_end|>"
    assert tok.padding_side == "left"


def test_load_causal_lm_auto_is_cpu_float32_here(tiny_model, no_cuda):
    model, tok = load_causal_lm(tiny_model, eval_mode=True)
    assert module_device(model) == torch.device("cpu")
    assert next(model.parameters()).dtype is torch.float32
    assert not model.training
    assert tok.pad_token == tok.eos_token
    half, _ = load_causal_lm(tiny_model, device="cpu", dtype="bfloat16")
    assert next(half.parameters()).dtype is torch.bfloat16
    with pytest.raises(ValueError, match="CUDA"):
        load_causal_lm(tiny_model, device="cuda")


def test_load_causal_lm_applies_and_merges_adapters(tiny_model, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        expected = lora(input_ids=ids).logits

    unmerged, _ = load_causal_lm(tiny_model, adapter=tmp_path / "adapter", eval_mode=True)
    merged, _ = load_causal_lm(tiny_model, adapter=tmp_path / "adapter", merge_adapter=True, eval_mode=True)
    via_folder, _ = load_causal_lm(tmp_path / "adapter", eval_mode=True)  # the adapter names its base
    assert isinstance(unmerged, PeftModel) and isinstance(via_folder, PeftModel)
    assert not isinstance(merged, PeftModel)
    with torch.no_grad():
        for model in (unmerged, merged, via_folder):
            torch.testing.assert_close(model(input_ids=ids).logits, expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(ModelRefError, match="already brings"):
        load_causal_lm(tmp_path / "adapter", adapter=tmp_path / "adapter")


def test_transformers_backend_takes_auto_and_reports_a_missing_gpu(tiny_model, no_cuda):
    from agents.llm import LLMConfig, LLMError
    from agents.llm.transformers_backend import TransformersChat

    chat = TransformersChat(LLMConfig(model=str(tiny_model)))  # device/dtype auto
    assert module_device(chat.model) == torch.device("cpu") and chat.model.dtype is torch.float32
    assert chat.tokenizer.padding_side == "left" and chat.tokenizer.pad_token == chat.tokenizer.eos_token
    assert not chat.model.training
    with pytest.raises(LLMError, match="CUDA"):
        TransformersChat(LLMConfig(model=str(tiny_model), device="cuda"))


def test_vllm_dtype_on_a_gpu(fake_cuda, monkeypatch):
    from agents.llm import LLMConfig
    from agents.llm.vllm_backend import _gpu_dtype

    monkeypatch.setattr(devices, "_bf16_supported", lambda device: True)
    assert _gpu_dtype(LLMConfig(backend="vllm")) == "bfloat16"
    assert _gpu_dtype(LLMConfig(backend="vllm", dtype="float16")) == "float16"
    assert _gpu_dtype(LLMConfig(backend="vllm", dtype="float32")) == "float32"
    monkeypatch.setattr(devices, "_bf16_supported", lambda device: False)
    assert _gpu_dtype(LLMConfig(backend="vllm")) == "auto"  # no bf16: vLLM picks


# -- recsys evaluation follows the model's device -----------------------------------------------
class _Reached(Exception):
    """The model got its first inputs, all on its device: enough (a meta model computes no values)."""


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _tensors(v)


def _on_meta_checking_inputs(model: torch.nn.Module) -> torch.nn.Module:
    """The model on the `meta` device, every module asserting its inputs are there too; the first
    module called with all inputs on meta raises `_Reached`."""
    model.to("meta").eval()
    target = module_device(model)

    def check(module, args, kwargs):
        found = list(_tensors((args, kwargs)))
        off = [str(t.device) for t in found if t.device != target]
        assert not off, f"{type(module).__name__} got inputs on {off}, the model is on {target}"
        if found:
            raise _Reached

    for module in model.modules():
        module.register_forward_pre_hook(check, with_kwargs=True)
    return model


# every smoke config, and GPSD's pretraining (it has no smoke.yaml of its own), small
GPSD_PRETRAIN = {"model": "gpsd_generative", "task": "gpsd_pretrain",
                 "data": {"kind": "synthetic", "users": 200, "items": 60, "max_len": 12},
                 "model_params": {"hidden": 32, "layers": 1, "heads": 4, "n_negatives": 32},
                 "train": {"epochs": 1, "batch_size": 64, "progress": False, "num_threads": 1}}
EVAL_CASES = [*SMOKE_CONFIGS, GPSD_PRETRAIN]


@pytest.mark.parametrize("config", EVAL_CASES,
                         ids=[p.parent.name if isinstance(p, Path) else p["model"] for p in EVAL_CASES])
def test_evaluation_inputs_follow_the_model_device(config, one_torch_thread, tmp_path, request):
    """A model on another device than the CPU (here `meta`) must get its evaluation inputs there; CPU
    inputs (the GPU crash of deepfm, din, gpsd, gpsd_generative, sasrec, tiger) fail the assertion."""
    from recsys_core import ExperimentConfig
    from recsys_core.registry import get_task

    cfg = (ExperimentConfig.from_yaml(config, ["train.progress=false"]) if isinstance(config, Path)
           else ExperimentConfig.from_dict(config))
    if cfg.task == "search_retrieval":  # a simulator log over a sandbox and queries with golds
        root = request.getfixturevalue("sim_and_queries")
        cfg = ExperimentConfig.from_yaml(config, ["train.progress=false", f"data.path={root / 'sim'}",
                                                  f"task_params.queries_dir={root / 'queries'}",
                                                  "task_params.item_text=false"])
    if cfg.model == "matt":  # a test-time wrapper: it needs a trained run on the same data
        from recsys_core import Trainer

        base = ExperimentConfig.from_yaml(Path(config).parent.parent / "deepfm" / "smoke.yaml",
                                          ["train.progress=false", "train.epochs=1", f"data={cfg.data}"])
        Trainer(base, tmp_path / "base").fit()
        cfg.model_params["base_run"] = str(tmp_path / "base")
    task = get_task(cfg.task)(cfg)
    model = _on_meta_checking_inputs(task.build_model())
    with torch.no_grad(), pytest.raises(_Reached):
        task.evaluate(model, "valid")
    if cfg.task == "ctr" and task.data.has_history:  # the online entry point (rank_products)
        # gpsd drops padded history rows by boolean indexing, which a meta tensor can only fake
        with torch.fx.experimental._config.patch(meta_nonzero_assume_all_nonzero=True), pytest.raises(_Reached):
            task.score(model, [[1] * len(task.data.field_vocab_sizes)], [[2] * len(task.data.field_vocab_sizes)])
    if cfg.task == "generative_retrieval":  # recommend_next
        with pytest.raises(_Reached):
            task.recommend(model, [1, 2, 3], 5)


def test_a_hub_name_loads_only_from_the_local_cache(tmp_path, monkeypatch):
    """Nothing is downloaded at run time: a hub name resolves when its files are in the HF cache, and is
    a clear error otherwise."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelRefError, match="neither a folder here nor a model in the local Hugging Face cache"):
        resolve_model_ref("Qwen/Qwen3-4B")
    repo = tmp_path / "models--Qwen--Qwen3-4B"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    assert resolve_model_ref("Qwen/Qwen3-4B") == "Qwen/Qwen3-4B"


def test_a_shipped_student_loads_by_name_and_falls_back_with_a_banner_when_absent(tmp_path, monkeypatch, capsys):
    import shoplab_core.models as models
    from agents.llm import LLMConfig, LLMError
    from agents.llm.factory import make_backend
    from agents.llm.models import with_fallback

    monkeypatch.setattr(models, "SHIPPED_MODEL_DIR", tmp_path)
    monkeypatch.setattr(models, "prepare_default_model", lambda *a, **k: tmp_path / "prepared")
    # Absent (an install without the repo's data/): a clear error, or the fallback with a note.
    with pytest.raises(ModelRefError, match="ships in the repository's data/models/"):
        resolve_model_source("shoplab-student")
    config = LLMConfig(model="shoplab-student", fallback_model="smollm2-135m-instruct")
    assert with_fallback(config).model == "smollm2-135m-instruct"
    assert "using smollm2-135m-instruct instead" in capsys.readouterr().err
    assert with_fallback(LLMConfig(model="shoplab-student")).model == "shoplab-student"  # no fallback: no swap
    with pytest.raises(LLMError, match="ships in the repository"):  # a backend without a fallback: a clear error
        make_backend(LLMConfig(model="shoplab-student", backend="transformers"))
    capsys.readouterr()
    with pytest.raises(LLMError):  # with one, the backend loads the fallback (here a stub path: it fails to load)
        make_backend(LLMConfig(model="shoplab-student", backend="transformers", fallback_model="smollm2-135m-instruct"))
    assert "using smollm2-135m-instruct instead" in capsys.readouterr().err
    # Present: the adapter on its base, named by alias in adapter_config.json.
    folder = tmp_path / "smollm2-135m-shoplab-student"
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"base_model_name_or_path": "smollm2-135m-instruct", "r": 8}')
    source = resolve_model_source("shoplab-student")
    assert source == ModelSource(str(tmp_path / "prepared"), str(folder))
    assert with_fallback(config) is config
