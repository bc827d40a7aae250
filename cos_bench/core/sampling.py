"""Sampling and speculative verification: pure functions over tensors.

Names follow roles, never bare p/q: `draft_probs` is the distribution a
token was drafted from, `target_probs` the combined distribution it must
follow. Randomness always comes from an explicit `torch.Generator`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token id (0-dim, on probs' device) drawn from probs [V].

    The exponential race argmax(probs / E), E ~ Exp(1): what torch.multinomial does for one
    sample (same draws, same ids, same generator state on the CPU), without the host-side
    validity check with which multinomial stalls the CPU until a GPU catches up.
    """
    race = torch.empty_like(probs).exponential_(1, generator=generator)
    return torch.argmax(probs / race)


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
    """Outcome of verifying a block of k drafted tokens, left to right (host values)."""

    n_accepted: int  # leading drafts accepted
    accepted_tokens: tuple[int, ...]  # their ids
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

    Everything is decided on the device and crosses to the host in one transfer, the
    block's only sync: so the replacement is drawn before the host knows whether it is
    needed (from the first rejected row, or row 0 when none is). An unused draw is
    independent of everything emitted, so the output distribution is unchanged.
    """
    k = draft_tokens.shape[0]
    rows = torch.arange(k, device=draft_tokens.device)
    draft_p = draft_probs[rows, draft_tokens]
    target_p = target_probs[rows, draft_tokens]
    uniforms = torch.rand(k, device=draft_tokens.device, dtype=draft_p.dtype, generator=generator)
    # u < target/draft, written without division; u ∈ [0, 1) so target >= draft always accepts.
    accepted = uniforms * draft_p < target_p  # [k]
    overlaps = torch.minimum(draft_probs, target_probs).sum(dim=-1)  # [k]
    first_rejected = (~accepted).int().argmax()  # 0 when every draft passed
    replacement = sample(residual_probs(target_probs[first_rejected], draft_probs[first_rejected]), generator)
    # float64 holds token ids (< 2^53) and the overlaps exactly: one tensor, one transfer.
    packed = torch.cat([accepted.double(), overlaps.double(), replacement.double().reshape(1), draft_tokens.double()])
    host = packed.tolist()
    accepted_host, overlaps_host = host[:k], host[k : 2 * k]
    n_accepted = accepted_host.index(0.0) if 0.0 in accepted_host else k
    accepted_tokens = tuple(int(t) for t in host[2 * k + 1 : 2 * k + 1 + n_accepted])
    if n_accepted == k:
        return Verdict(k, accepted_tokens, None, tuple(overlaps_host))
    return Verdict(n_accepted, accepted_tokens, int(host[2 * k]), tuple(overlaps_host[: n_accepted + 1]))
