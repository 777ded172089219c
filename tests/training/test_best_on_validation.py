"""Early stopping on a validation score (`training.stages.BestOnValidation`): the stage keeps the weights
that scored best, the starting ones when no step beat them, and stops after `patience` evaluations."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerControl, TrainerState, TrainingArguments

from training.stages import BestOnValidation


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.trained = torch.nn.Parameter(torch.zeros(3))
        self.frozen = torch.nn.Parameter(torch.ones(2), requires_grad=False)


def _drive(callback: BestOnValidation, model: _Model, weights: list[float], every: int = 1) -> list[int]:
    """Run the callback's events over steps whose weights are `weights[i]`; return the steps evaluated."""
    args, state, control = TrainingArguments(output_dir="/tmp/unused", report_to="none"), TrainerState(), TrainerControl()
    callback.on_train_begin(args, state, control, model=model)
    for step, value in enumerate(weights, start=1):
        with torch.no_grad():
            model.trained.fill_(value)
        state.global_step = step
        callback.on_step_end(args, state, control, model=model)
        if control.should_training_stop:
            break
    callback.on_train_end(args, state, control, model=model)
    return [point["step"] for point in callback.curve]


def _score_by_weight(table: dict[float, float]):
    def score(model, tokenizer):
        assert not model.training  # scored in eval mode (no dropout)
        return {"score": table[round(float(model.trained[0]), 3)], "hit@10": 0.0}
    return score


def test_the_best_scoring_weights_are_restored_when_training_ends():
    model = _Model().train()
    callback = BestOnValidation(_score_by_weight({0.0: 0.5, 1.0: 0.7, 2.0: 0.6, 3.0: 0.65}), None, every_steps=1)
    assert _drive(callback, model, [1.0, 2.0, 3.0]) == [0, 1, 2, 3]
    assert callback.best_step == 1 and callback.best_score == 0.7
    assert torch.equal(model.trained, torch.full((3,), 1.0)) and model.training
    summary = callback.summary()
    assert [p["score"] for p in summary["validation_curve"]] == [0.5, 0.7, 0.6, 0.65]


def test_the_starting_model_is_kept_when_no_step_beats_it():
    model = _Model()
    callback = BestOnValidation(_score_by_weight({0.0: 0.9, 1.0: 0.7, 2.0: 0.8}), None, every_steps=1)
    _drive(callback, model, [1.0, 2.0])
    assert callback.best_step == 0 and torch.equal(model.trained, torch.zeros(3))


def test_patience_stops_training_and_every_steps_spaces_the_evaluations():
    model = _Model()
    callback = BestOnValidation(_score_by_weight({0.0: 0.5, 1.0: 0.4, 2.0: 0.3, 3.0: 0.9, 4.0: 0.95}), None,
                                every_steps=1, patience=2)
    assert _drive(callback, model, [1.0, 2.0, 3.0, 4.0]) == [0, 1, 2]  # stopped before step 3's gain
    spaced = BestOnValidation(_score_by_weight({0.0: 0.5, 1.0: 0.4, 2.0: 0.6, 3.0: 0.3, 4.0: 0.2}), None,
                              every_steps=2)
    assert _drive(spaced, _Model(), [1.0, 2.0, 3.0, 4.0]) == [0, 2, 4]
    assert spaced.best_step == 2
    with pytest.raises(ValueError, match="every_steps"):
        BestOnValidation(lambda m, t: {"score": 0.0}, None, every_steps=0)
