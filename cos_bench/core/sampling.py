"""Sampling and speculative verification: pure functions over tensors.

Names follow roles, never bare p/q: `draft_probs` is the distribution a
token was drafted from, `target_probs` the combined distribution it must
follow. Randomness always comes from an explicit `torch.Generator`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token id (0-dim, on probs' device) drawn from probs [V]."""
    return torch.multinomial(probs, 1, generator=generator)[0]


def residual_probs(target_probs: torch.Tensor, draft_probs: torch.Tensor) -> torch.Tensor:
    """norm(max(0, target − draft)) [V]: where a rejected draft's replacement is drawn from.

    When target == draft the residual is empty, but then a rejection has
    probability 0; falling back to the target keeps the function total.
    """
    residual = (target_probs - draft_probs).clamp_min(0)
    total = residual.sum()
    return torch.where(total > 0, residual / total.clamp_min(torch.finfo(residual.dtype).tiny), target_probs)


@dataclass(frozen=True)
class Verdict:
    """Outcome of verifying a block of k drafted tokens, left to right."""

    n_accepted: int  # leading drafts accepted
    correction: int | None  # replacement for draft n_accepted, None if all k accepted
    overlaps: tuple[float, ...]  # Σ_x min(draft, target) at each position that got a verdict


def verify_block(
    draft_tokens: torch.Tensor,  # [k]
    draft_probs: torch.Tensor,  # [k, V]
    target_probs: torch.Tensor,  # [k, V]
    generator: torch.Generator | None,
) -> Verdict:
    """Accept draft x with probability min(1, target(x)/draft(x)); at the first
    rejection draw the replacement from the residual and stop.

    Tokens emitted this way are distributed exactly as target (standard
    speculative sampling with the combined distribution as the target). With
    one-hot distributions (T = 0) this is greedy: accept iff x is the target's
    argmax, else emit that argmax.
    """
    k = draft_tokens.shape[0]
    rows = torch.arange(k, device=draft_tokens.device)
    draft_p = draft_probs[rows, draft_tokens]
    target_p = target_probs[rows, draft_tokens]
    uniforms = torch.rand(k, device=draft_tokens.device, dtype=draft_p.dtype, generator=generator)
    # u < target/draft, written without division; u ∈ [0, 1) so target >= draft always accepts.
    accepted = uniforms * draft_p < target_p
    overlaps = torch.minimum(draft_probs, target_probs).sum(dim=-1)
    # One device->host transfer per block: the accept/reject decision itself.
    accepted_host, overlaps_host = accepted.tolist(), overlaps.tolist()
    n_accepted = accepted_host.index(False) if False in accepted_host else k
    if n_accepted == k:
        return Verdict(k, None, tuple(overlaps_host))
    replacement = sample(residual_probs(target_probs[n_accepted], draft_probs[n_accepted]), generator)
    return Verdict(n_accepted, int(replacement), tuple(overlaps_host[: n_accepted + 1]))
