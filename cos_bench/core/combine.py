"""Combination rules: n models' next-token logits -> one distribution.

Pure functions over tensors (docs/design.md §1). Every rule takes the models'
logits in a fixed role order and a temperature, and returns probabilities
over the shared vocabulary. Temperature 0 means the argmax of the combined
distribution, returned as a one-hot vector so that greedy decoding is the
degenerate case of speculative sampling (accept iff the draft is that argmax).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

from cos_bench.errors import CosBenchError

WEIGHT_TOLERANCE = 1e-6


def one_hot_argmax(scores: torch.Tensor) -> torch.Tensor:
    """One-hot of the argmax along the last axis (first index wins ties). [..., V] -> [..., V]"""
    hot = torch.zeros_like(scores)
    return hot.scatter_(-1, scores.argmax(dim=-1, keepdim=True), 1.0)


def as_float(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits are upcast so mixing and ratios are not rounded away; float64 stays."""
    return logits if logits.dtype == torch.float64 else logits.float()


def model_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """One model's own distribution at `temperature` (one-hot argmax at T = 0). [..., V] -> [..., V]"""
    logits = as_float(logits)
    if temperature == 0:
        return one_hot_argmax(logits)
    return torch.softmax(logits / temperature, dim=-1)


class CombinationRule(ABC):
    """Turns the logits of `n_models` models (in role order) into one distribution."""

    n_models: int

    def combine(self, logits: Sequence[torch.Tensor], temperature: float) -> torch.Tensor:
        """Combined probabilities [..., V] from n logits tensors of the same shape [..., V]."""
        if len(logits) != self.n_models:
            raise ValueError(f"{type(self).__name__} combines {self.n_models} models, got {len(logits)}")
        if temperature == 0:
            # Greedy is the argmax of the *combined* distribution at T = 1 (for WE the
            # mixture, not any single model — the official code's greedy-WE bug).
            return one_hot_argmax(self.combined_probs([as_float(x) for x in logits], 1.0))
        return self.combined_probs([as_float(x) for x in logits], temperature)

    @abstractmethod
    def combined_probs(self, logits: Sequence[torch.Tensor], temperature: float) -> torch.Tensor:
        """The rule at a positive temperature."""


class WeightedEnsemble(CombinationRule):
    """r = Σ w_i · softmax(l_i / T): each model tempered, then probabilities mixed."""

    def __init__(self, weights: Sequence[float]):
        weights = [float(w) for w in weights]
        if len(weights) < 2:
            raise CosBenchError(f"weighted ensemble needs at least 2 weights, got {len(weights)}: give one weight per model")
        if any(w < 0 or math.isnan(w) for w in weights):
            raise CosBenchError(f"ensemble weights must be non-negative, got {weights}: fix the weights")
        if abs(sum(weights) - 1.0) > WEIGHT_TOLERANCE:
            raise CosBenchError(f"ensemble weights must sum to 1, got {weights} (sum {sum(weights):.6g}): rescale them")
        self.weights = tuple(weights)
        self.n_models = len(weights)

    def combined_probs(self, logits: Sequence[torch.Tensor], temperature: float) -> torch.Tensor:
        mixture = torch.zeros_like(logits[0])
        for weight, model_logits in zip(self.weights, logits):
            mixture = mixture + weight * torch.softmax(model_logits / temperature, dim=-1)
        return mixture


class Contrastive(CombinationRule):
    """r = softmax((l_expert − μ·l_amateur) / T): raw logits combined, tempered once.

    The operand order is fixed by role (expert_index, amateur_index), never by
    which model is proposing. `plausibility_alpha` (off by default) keeps only
    tokens whose expert probability is at least α times the expert's maximum.
    """

    def __init__(self, mu: float, expert_index: int = 1, amateur_index: int = 0, plausibility_alpha: float | None = None):
        if not mu >= 0:
            raise CosBenchError(f"contrastive mu must be >= 0, got {mu}: use mu >= 0 (paper default 0.1)")
        if {expert_index, amateur_index} != {0, 1}:
            raise CosBenchError("contrastive decoding combines exactly 2 models: name one expert and one amateur")
        if plausibility_alpha is not None and not 0 < plausibility_alpha < 1:
            raise CosBenchError(f"plausibility alpha must be in (0, 1), got {plausibility_alpha}: or leave it unset")
        self.mu = float(mu)
        self.expert_index = expert_index
        self.amateur_index = amateur_index
        self.plausibility_alpha = plausibility_alpha
        self.n_models = 2

    def combined_probs(self, logits: Sequence[torch.Tensor], temperature: float) -> torch.Tensor:
        expert, amateur = logits[self.expert_index], logits[self.amateur_index]
        scores = expert - self.mu * amateur
        if self.plausibility_alpha is not None:
            expert_logprobs = torch.log_softmax(expert, dim=-1)
            floor = expert_logprobs.max(dim=-1, keepdim=True).values + math.log(self.plausibility_alpha)
            scores = scores.masked_fill(expert_logprobs < floor, float("-inf"))
        return torch.softmax(scores / temperature, dim=-1)


# Rule name (a config's `rule:`) -> class: the registry cos_bench.config takes its choices from.
COMBINATION_RULES: dict[str, type[CombinationRule]] = {"we": WeightedEnsemble, "cd": Contrastive}
