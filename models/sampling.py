"""Choosing the next token on the device, with no host sync, so it can sit inside a captured decode step.

The same choices as transformers' ``generate`` with zhiku's parameters: repetition penalty on every token seen
so far (prompt included), then greedy, or temperature, its default top-k of 50 and top-p, and a draw. The
draw uses the exponential trick (argmax of p / E, E ~ Exp(1)), which a CUDA graph can replay.
"""

from __future__ import annotations

TOP_K = 50  # transformers' default for sampling


def penalize(logits, seen, penalty):
    """transformers' RepetitionPenaltyLogitsProcessor, over a mask of the token ids seen so far."""
    import torch

    return torch.where(seen, torch.where(logits < 0, logits * penalty, logits / penalty), logits)


def choose(logits, seen, penalty, inv_temperature, top_p, greedy: bool):
    """Next token ids [B] from float logits [B, V]; ``penalty``, ``inv_temperature``, ``top_p``: 1-element tensors."""
    logits = penalize(logits, seen, penalty)
    if greedy:
        return logits.argmax(dim=-1)
    top, ids = (logits * inv_temperature).topk(min(TOP_K, logits.shape[-1]), dim=-1)
    probs = top.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass of the more likely tokens: the first is always kept
    probs = probs * (before < top_p)
    draw = (probs / probs.new_empty(probs.shape).exponential_()).argmax(dim=-1, keepdim=True)
    return ids.gather(-1, draw).squeeze(-1)
