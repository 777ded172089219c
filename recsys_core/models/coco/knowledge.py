"""The LLM's contextual knowledge: SmolLM2 reads user and item texts once; its hidden states are cached.

What the LLM is [proposal]: the first `n_layers` (default 8 of 30) decoder layers of the bundled
SmolLM2-135M-Instruct, split into a frozen *trunk* (layers 0..n-2) and a *top block* (layer n-1 and
the final norm). Middle layers carry most of a small LM's semantic knowledge and cost n/30 of a full
pass (925 tokens/s for 8 layers on this 2-core CPU against 234 for all 30), which is what makes
reading 6,040 users' contexts affordable. LoRA (CoCo's contradiction resolution) tunes the top block
only: the trunk's token states are cached, so a LoRA step runs one decoder layer.

A text is a list of *segments* (a user: a profile sentence, then one per recent rating; a movie: one),
tokenised separately and concatenated, so the LLM reads them in context. A segment's knowledge is the
mean of the top block's states over its tokens [proposal]: the prompt's cross-attention then reads
a user's profile and each rating as one key each.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from shoplab_core.devices import module_device, resolve_device


@dataclass
class KnowledgeCache:
    """Cached knowledge of one dataset (numpy; row i of the item arrays is item i, row 0 = padding)."""

    item_states: np.ndarray  # [M+1, D] float32
    user_states: np.ndarray  # [U, S, D] float32, per segment (S = the most segments of any user)
    user_mask: np.ndarray  # [U, S] bool
    # the trunk's token states of every user text (float16, flattened): the LoRA stage's input
    user_trunk: np.ndarray | None = None  # [N_tokens, D]
    user_offsets: np.ndarray | None = None  # [U+1] token offsets into user_trunk
    user_token_segments: np.ndarray | None = None  # [N_tokens] segment index of each token

    @property
    def dim(self) -> int:
        return int(self.item_states.shape[1])

    def save(self, folder: Path, meta: dict) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("item_states", "user_states", "user_mask", "user_trunk", "user_offsets", "user_token_segments"):
            value = getattr(self, name)
            if value is not None:
                np.save(folder / f"{name}.npy", value)
        (folder / "meta.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, folder: Path, with_trunk: bool = False) -> KnowledgeCache:
        def read(name: str, mmap: bool = False):
            path = folder / f"{name}.npy"
            return np.load(path, mmap_mode="r" if mmap else None) if path.exists() else None

        cache = cls(read("item_states"), read("user_states"), read("user_mask"))
        if with_trunk:
            cache.user_trunk, cache.user_offsets = read("user_trunk", mmap=True), read("user_offsets")
            cache.user_token_segments = read("user_token_segments")
            if cache.user_trunk is None:
                raise FileNotFoundError(f"{folder} holds no trunk states (built with keep_trunk=False): "
                                        "rebuild the knowledge cache for the LoRA stage")
        return cache


class KnowledgeLLM(nn.Module):
    """The trunk and the top block of a causal LM's first `n_layers` (see the module docstring)."""

    def __init__(self, model_ref: str = "default", n_layers: int = 8, device: str = "auto"):
        super().__init__()
        from transformers import AutoModel

        from shoplab_core.models import load_causal_lm

        lm, self.tokenizer = load_causal_lm(model_ref, device=None, dtype="float32", offline=True)
        base = lm.model
        total = len(base.layers)
        if not 2 <= n_layers <= total:
            raise ValueError(f"knowledge n_layers must be in 2..{total} for this model, got {n_layers}")
        top_config = base.config.__class__.from_dict(base.config.to_dict())
        top_config.num_hidden_layers, top_config.vocab_size, top_config.pad_token_id = 1, 1, None
        self.top = AutoModel.from_config(top_config)
        self.top.layers[0].load_state_dict(base.layers[n_layers - 1].state_dict())
        self.top.norm.load_state_dict(base.norm.state_dict())
        base.layers = base.layers[: n_layers - 1]
        base.config.num_hidden_layers = n_layers - 1
        base.norm = nn.Identity()  # the trunk hands the top block raw residual states
        self.trunk = base
        self.trunk.requires_grad_(False)
        self.top.requires_grad_(False)
        self.n_layers = n_layers
        self.to(resolve_device(device)).eval()

    @property
    def dim(self) -> int:
        return int(self.top.config.hidden_size)

    def tokenize(self, segments: list[str], max_tokens: int) -> tuple[list[int], list[int]]:
        ids, seg = [], []
        for s, text in enumerate(segments):
            piece = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            ids += piece
            seg += [s] * len(piece)
        return ids[:max_tokens], seg[:max_tokens]

    def run_top(self, trunk_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.top(inputs_embeds=trunk_states, attention_mask=attention_mask).last_hidden_state

    @torch.inference_mode()
    def encode(self, texts: list[list[str]], max_tokens: int = 160, batch_size: int = 32, keep_trunk: bool = False,
               progress: str | None = None):
        """(segment states [N, S, D], segment mask [N, S], trunk token states or None, token offsets,
        token segment ids) of N texts (each a list of segments)."""
        from tqdm.auto import tqdm

        device = module_device(self.trunk)
        tokens = [self.tokenize(t, max_tokens) for t in texts]
        n_seg = max(1, max((len(t) for t in texts), default=1))
        states = np.zeros((len(texts), n_seg, self.dim), dtype=np.float32)
        lengths = np.array([len(ids) for ids, _ in tokens], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        trunk_flat = np.zeros((int(offsets[-1]), self.dim), dtype=np.float16) if keep_trunk else None
        order = np.argsort(-lengths, kind="stable")  # similar lengths together: little padding
        bar = tqdm(total=len(texts), desc=progress, disable=progress is None, unit="text")
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            width = max(1, int(lengths[rows].max()))
            ids = torch.full((len(rows), width), 0, dtype=torch.long)
            seg = torch.full((len(rows), width), -1, dtype=torch.long)
            for r, i in enumerate(rows):
                n = int(lengths[i])
                ids[r, :n] = torch.tensor(tokens[i][0], dtype=torch.long)
                seg[r, :n] = torch.tensor(tokens[i][1], dtype=torch.long)
            mask = (seg >= 0).long().to(device)
            trunk = self.trunk(input_ids=ids.to(device), attention_mask=mask).last_hidden_state
            top = self.run_top(trunk, mask)
            states[rows] = segment_means(top, seg.to(device), n_seg).float().cpu().numpy()
            if keep_trunk:
                for r, i in enumerate(rows):
                    trunk_flat[offsets[i]:offsets[i + 1]] = trunk[r, :lengths[i]].half().cpu().numpy()
            bar.update(len(rows))
        bar.close()
        seg_mask = np.zeros((len(texts), n_seg), dtype=bool)
        for i, (_, segments) in enumerate(tokens):
            seg_mask[i, :len(set(segments))] = True
        token_segments = np.concatenate([np.asarray(s, dtype=np.int16) for _, s in tokens]) if tokens else None
        return states, seg_mask, trunk_flat, offsets, token_segments


def segment_means(states: torch.Tensor, segments: torch.Tensor, n_segments: int) -> torch.Tensor:
    """[B, S, D] mean of `states` [B, L, D] over the tokens of each segment (`segments` [B, L], -1 = padding)."""
    one_hot = (segments.unsqueeze(1) == torch.arange(n_segments, device=segments.device)[None, :, None]).to(states.dtype)
    return one_hot @ states / one_hot.sum(-1, keepdim=True).clamp(min=1.0)


def knowledge_cache_dir(root: str | Path, dataset: str, model_ref: str, n_layers: int, texts_digest: str) -> Path:
    key = hashlib.sha1(f"{model_ref}|{n_layers}|{texts_digest}".encode()).hexdigest()[:10]
    return Path(root) / f"{dataset}-L{n_layers}-{key}"


def texts_digest(item_texts: list[str], user_texts: list[list[str]]) -> str:
    digest = hashlib.sha1()
    for text in item_texts:
        digest.update(text.encode())
    for segments in user_texts:
        digest.update("\x1f".join(segments).encode())
    return digest.hexdigest()


def build_knowledge_cache(item_texts: list[str], user_texts: list[list[str]], folder: str | Path,
                          model_ref: str = "default", n_layers: int = 8, keep_trunk: bool = True,
                          device: str = "auto", batch_size: int = 32, max_tokens: int = 160,
                          progress: bool = True) -> KnowledgeCache:
    """Run the LLM over every item and user text once and save the states under `folder` (a
    finished cache is reused: `meta.json` is written last)."""
    from filelock import FileLock

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):  # runs started together build it once; the others wait
        if (folder / "meta.json").exists():
            return KnowledgeCache.load(folder, with_trunk=keep_trunk)
        return _build(item_texts, user_texts, folder, model_ref, n_layers, keep_trunk, device, batch_size,
                      max_tokens, progress)


def _build(item_texts, user_texts, folder: Path, model_ref, n_layers, keep_trunk, device, batch_size, max_tokens,
           progress) -> KnowledgeCache:
    import time

    llm = KnowledgeLLM(model_ref, n_layers, device)
    t0 = time.time()
    item_states, _, _, _, _ = llm.encode([[t] if t else [""] for t in item_texts], max_tokens, batch_size,
                                         progress="LLM knowledge: items" if progress else None)
    item_states = item_states[:, 0]
    item_states[0] = 0.0
    user_states, user_mask, trunk, offsets, token_segments = llm.encode(
        user_texts, max_tokens, batch_size, keep_trunk, progress="LLM knowledge: users" if progress else None)
    cache = KnowledgeCache(item_states, user_states, user_mask, trunk, offsets, token_segments)
    cache.save(folder, {"model": model_ref, "n_layers": n_layers, "dim": llm.dim, "items": len(item_texts),
                        "users": len(user_texts), "max_tokens": max_tokens, "seconds": round(time.time() - t0, 1),
                        "user_tokens": int(offsets[-1])})
    return cache
