"""MAS weight importance (Aljundi et al., 2018) on the forget instances, its penalty and its gradient mask.

Plain tensor code with no Lightning import. Importance of a parameter is the mean over instances of
``|d ||f(x)||_2 / d theta|``, computed per instance with :mod:`torch.func` (one vectorised pass per chunk).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap


def mas_importance_sum(
    model: nn.Module,
    inputs: Tensor,
    *,
    chunk_size: int = 64,
) -> dict[str, Tensor]:
    """Sum over ``inputs`` of the absolute per-instance gradient of the L2 norm of the logits.

    Returns sums, not means, so that shards on several processes can be added up and divided by the total count.
    Only parameters with ``requires_grad`` are included; the model's modes are left to the caller (use eval mode so
    BatchNorm uses its running statistics).

    Args:
        model: the classifier.
        inputs: ``[N, ...]`` forget inputs.
        chunk_size: instances per vectorised pass (bounds memory).

    Returns:
        ``{parameter name: tensor shaped like the parameter}``, in float32.

    Examples:
        >>> model = nn.Linear(3, 2)
        >>> sums = mas_importance_sum(model, torch.ones(4, 3))
        >>> sorted(sums), tuple(sums["weight"].shape)
        (['bias', 'weight'], (2, 3))
    """
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    totals = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    if inputs.shape[0] == 0:
        return totals

    def logit_norm(p: dict[str, Tensor], x: Tensor) -> Tensor:
        out = functional_call(model, {**p, **frozen, **buffers}, (x.unsqueeze(0),))
        return out.float().norm(p=2)

    try:
        per_instance = vmap(grad(logit_norm), in_dims=(None, 0))
        for chunk in inputs.split(chunk_size):
            grads = per_instance(params, chunk)
            for name, g in grads.items():
                totals[name] += g.abs().sum(0).float()
    except (RuntimeError, NotImplementedError):  # models torch.func cannot vmap (e.g. in-place ops): loop instead
        for name in totals:
            totals[name].zero_()
        named = dict(model.named_parameters())
        for x in inputs:
            model.zero_grad(set_to_none=True)
            with torch.enable_grad():
                model(x.unsqueeze(0)).float().norm(p=2).backward()
            for name in totals:
                g = named[name].grad
                if g is not None:
                    totals[name] += g.abs().float()
        model.zero_grad(set_to_none=True)
    return totals


def normalize_importance(importance: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Min-max normalise each tensor to ``[0, 1]`` (a constant tensor becomes all zeros).

    Examples:
        >>> normalize_importance({"w": torch.tensor([1.0, 3.0, 2.0])})["w"].tolist()
        [0.0, 1.0, 0.5]
    """
    out = {}
    for name, imp in importance.items():
        low, high = imp.min(), imp.max()
        span = high - low
        out[name] = torch.where(span > 0, (imp - low) / span.clamp_min(1e-12), torch.zeros_like(imp))
    return out


def importance_penalty(
    params: Mapping[str, Tensor],
    reference: Mapping[str, Tensor],
    importance: Mapping[str, Tensor],
    strength: float,
) -> Tensor:
    """``strength / 2 * sum((1 - importance) * (theta - theta_0) ** 2)``: hold the weights the forget set needs least.

    Args:
        params: current parameters by name.
        reference: pre-trained parameters ``theta_0`` by name.
        importance: normalised importance in ``[0, 1]`` by name (1 = most important for the forget set, free to move).
        strength: the penalty's ``lambda``.

    Examples:
        >>> p = {"w": torch.tensor([1.0, 1.0])}
        >>> ref = {"w": torch.tensor([0.0, 0.0])}
        >>> importance_penalty(p, ref, {"w": torch.tensor([1.0, 0.0])}, strength=2.0).item()
        1.0
    """
    total: Tensor | None = None
    for name, imp in importance.items():
        p = params[name]
        term = ((1.0 - imp) * (p - reference[name]).pow(2)).sum()
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return 0.5 * strength * total


def gradient_mask(importance: Mapping[str, Tensor], top_fraction: float | None = None) -> dict[str, Tensor]:
    """Multipliers for the gradients: the normalised importance itself, or 1 on the ``top_fraction`` most important
    entries (one threshold over all tensors) and 0 elsewhere.

    Raises:
        ValueError: if ``top_fraction`` is not in ``(0, 1]``.

    Examples:
        >>> gradient_mask({"w": torch.tensor([0.1, 0.9, 0.5, 0.0])}, top_fraction=0.5)["w"].tolist()
        [0.0, 1.0, 1.0, 0.0]
    """
    if top_fraction is None:
        return {n: imp.clone() for n, imp in importance.items()}
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"`top_fraction` must be in (0, 1], got {top_fraction}.")
    flat = torch.cat([imp.flatten() for imp in importance.values()])
    keep = max(1, round(top_fraction * flat.numel()))
    threshold = flat.topk(keep).values.min()
    return {n: (imp >= threshold).to(imp.dtype) for n, imp in importance.items()}


def apply_gradient_mask(params: Mapping[str, nn.Parameter], mask: Mapping[str, Tensor]) -> None:
    """Multiply each parameter's ``.grad`` in place by its mask (parameters without a gradient are skipped)."""
    for name, m in mask.items():
        g = params[name].grad
        if g is not None:
            g.mul_(m.to(g.dtype))
