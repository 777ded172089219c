"""Configuration of `PROTrainer` (Preference Ranking Optimization, Song et al. 2023, arXiv 2306.17492)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments


@dataclass
class PROConfig(TrainingArguments):
    r"""
    Parameters:
        max_length (`int`, defaults to `160`):
            Longest prompt + candidate sequence; the prompt is cut from the left to fit.
        sft_weight (`float`, defaults to `0.1`):
            Weight of the NLL term on the best candidate (PRO's SFT term; BEQUE's weight is not
            public). `0` gives the pure ranking loss.
        tie_tolerance (`float`, defaults to `1e-4`):
            Rewards closer than this are a tie: neither candidate is ranked above the other.
        reward_scale (`float`, defaults to `1.0`):
            Multiplies every reward gap, i.e. divides PRO's temperatures; 1.0 is the paper's loss.
            [proposal] for rewards on a small scale (see `pro_listwise_loss`).
    """

    max_length: int = field(default=160, metadata={"help": "Longest prompt + candidate, in tokens."})
    sft_weight: float = field(default=0.1, metadata={"help": "Weight of the NLL term on the best candidate."})
    tie_tolerance: float = field(default=1e-4, metadata={"help": "Rewards this close are tied."})
    reward_scale: float = field(default=1.0, metadata={"help": "Multiplies reward gaps (divides PRO's temperatures)."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "The collator needs every column."})
    report_to: str | list[str] = field(default="none", metadata={"help": "Where to log."})
