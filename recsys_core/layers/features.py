"""The zoo's one feature embedding, the FuxiCTR way: every CTR model looks its categorical fields up here.

A sample's categorical fields come in groups that share the batch contract of `recsys_core.data.ctr`:
item fields (`cand_fields` [B, F], `hist_fields` [B, T, F]; field 0 is the item id) and, where the data
has them, user fields (`user_fields` [B, U]). A `FeatureEmbedding` holds one table per field of a group
(id 0 = unknown / padding: a zero vector that stays zero), optionally a first-order weight per id (FM's
linear term), and returns the fields as `[..., F, k]` vectors, one flat `[..., F·k]` vector, or their sum.
DIN, DeepFM, GPSD, CoCo, STORE, SGCTR, DGenCTR and MATT's feature paths all go through it, so a field
means the same thing in every model and a new model gets the layout, the init and the checks for free.

Item-derived field scales (`set_item_scales`): a fixed weight per (item, field), looked up by the item id in
field 0, multiplies that field's vector and first-order weight. This is how ADA-SID's router weights reach
every ranker of the zoo: the semantic-ID fields of an item are amplified or damped by its router weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FieldSpec:
    """A categorical field: its name and its vocabulary size (ids 0..vocab_size-1, 0 = unknown)."""

    name: str
    vocab_size: int

    def __post_init__(self):
        if int(self.vocab_size) < 1:
            raise ValueError(f"field {self.name!r}: vocab_size must be >= 1, got {self.vocab_size}")


def field_specs(vocab_sizes: Sequence[int], names: Sequence[str] | None = None, prefix: str = "field") -> list[FieldSpec]:
    """FieldSpecs from vocabulary sizes (names default to `<prefix><i>`)."""
    names = list(names) if names is not None else [f"{prefix}{i}" for i in range(len(vocab_sizes))]
    if len(names) != len(vocab_sizes):
        raise ValueError(f"{len(names)} field names for {len(vocab_sizes)} vocabulary sizes")
    return [FieldSpec(str(n), int(v)) for n, v in zip(names, vocab_sizes, strict=True)]


class FeatureEmbedding(nn.Module):
    """One embedding table per field (`tables.{i}`), and with `first_order=True` one scalar weight per id
    (`first_order.{i}`, initialised at 0). Tables start at N(0, init_std) with the padding row at 0.
    A group may be empty (no user fields): then it returns [..., 0, k] and models need no special case."""

    def __init__(self, fields: Sequence[FieldSpec | int], embed_dim: int, first_order: bool = False,
                 init_std: float = 0.05):
        super().__init__()
        self.fields = [f if isinstance(f, FieldSpec) else FieldSpec(f"field{i}", int(f)) for i, f in enumerate(fields)]
        self.embed_dim = int(embed_dim)
        self.tables = nn.ModuleList(nn.Embedding(f.vocab_size, embed_dim, padding_idx=0) for f in self.fields)
        self.first_order = (nn.ModuleList(nn.Embedding(f.vocab_size, 1, padding_idx=0) for f in self.fields)
                            if first_order else None)
        for table in self.tables:
            nn.init.normal_(table.weight, std=init_std)
            with torch.no_grad():
                table.weight[0].zero_()
        for weight in self.first_order or []:
            nn.init.zeros_(weight.weight)
        self.register_buffer("item_scales", None, persistent=False)

    def set_item_scales(self, scales: torch.Tensor | None) -> None:
        """Fixed per-item field weights [n_items + 1, F] (row = the item id of field 0; None removes them). Not
        part of the state dict: the data gives them to the model each time it is built. [proposal] ADA-SID
        (2510.25622) says the router's weights amplify important IDs downstream without giving the ranker's
        formula; scaling the ID fields' embeddings (and first-order weights) is this project's choice."""
        if scales is None:
            self.item_scales = None
            return
        scales = torch.as_tensor(scales, dtype=torch.float32)
        if scales.ndim != 2 or scales.shape[1] != self.n_fields or len(scales) > self.fields[0].vocab_size:
            raise ValueError(f"item scales must be [items + 1 <= {self.fields[0].vocab_size}, {self.n_fields}], "
                             f"got {list(scales.shape)}")
        if not torch.isfinite(scales).all() or (scales < 0).any():
            raise ValueError("item scales must be finite and non-negative")
        self.item_scales = scales.to(self.tables[0].weight.device)

    def _scales_of(self, ids: torch.Tensor) -> torch.Tensor:
        return self.item_scales[ids[..., 0].clamp(max=len(self.item_scales) - 1)]

    @property
    def n_fields(self) -> int:
        return len(self.fields)

    @property
    def vocab_sizes(self) -> list[int]:
        return [f.vocab_size for f in self.fields]

    def __len__(self) -> int:
        return self.n_fields

    def _check(self, ids: torch.Tensor) -> None:
        if ids.shape[-1] != self.n_fields:
            raise ValueError(f"expected {self.n_fields} fields ({', '.join(f.name for f in self.fields)}), "
                             f"got {ids.shape[-1]}")

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Field vectors [..., F, k] of ids [..., F]."""
        self._check(ids)
        if not self.n_fields:
            return ids.new_zeros((*ids.shape, self.embed_dim), dtype=torch.float)
        vectors = torch.stack([table(ids[..., i]) for i, table in enumerate(self.tables)], dim=-2)
        if self.item_scales is not None:
            vectors = vectors * self._scales_of(ids).unsqueeze(-1)
        return vectors

    def flat(self, ids: torch.Tensor) -> torch.Tensor:
        """The field vectors concatenated: [..., F·k]."""
        return self(ids).flatten(-2)

    def summed(self, ids: torch.Tensor) -> torch.Tensor:
        """The sum of the field vectors [..., k] (a transformer token made of several fields)."""
        return self(ids).sum(-2)

    def linear(self, ids: torch.Tensor) -> torch.Tensor:
        """First-order weights [..., F] (FM's linear term); needs `first_order=True`."""
        if self.first_order is None:
            raise ValueError("this FeatureEmbedding was built without first-order weights")
        self._check(ids)
        if not self.n_fields:
            return ids.new_zeros(ids.shape, dtype=torch.float)
        weights = torch.cat([w(ids[..., i]) for i, w in enumerate(self.first_order)], dim=-1)
        if self.item_scales is not None:
            weights = weights * self._scales_of(ids)
        return weights

    def of_batch(self, batch: dict[str, torch.Tensor], key: str = "user_fields") -> torch.Tensor:
        """Field vectors [B, F, k] of `batch[key]`; an empty group needs no such key ([B, 0, k])."""
        if not self.n_fields:
            reference = batch["cand_fields"]
            return reference.new_zeros((len(reference), 0, self.embed_dim), dtype=torch.float)
        if key not in batch:
            raise ValueError(f"this model was built with {key} ({', '.join(f.name for f in self.fields)}): "
                             f"the batch lacks `{key}`")
        return self(batch[key])


class LegacyFieldTables:
    """Mixin: a model whose field tables moved into a `FeatureEmbedding` still loads weights saved before
    (`legacy_names`: (regex on the old name, replacement) pairs, applied under the module's prefix), so
    run folders trained by earlier versions keep working."""

    legacy_names: tuple = ()  # (old-name regex, replacement string or function) pairs

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        upgrade_legacy_names(state_dict, self.legacy_names, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def upgrade_legacy_names(state: dict, renames: tuple, prefix: str = "") -> dict:
    """Rename (in place) the keys of `state` under `prefix` that match one of `renames`' old-name patterns."""
    import re

    for key in [k for k in state if k.startswith(prefix)]:
        for pattern, replacement in renames:
            new = re.sub(f"^{pattern}$", replacement, key[len(prefix):])
            if new != key[len(prefix):]:
                state[prefix + new] = state.pop(key)
                break
    return state
