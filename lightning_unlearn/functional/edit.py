"""A closed-form, minimal edit of a classifier's last linear layer that moves chosen instances across the boundary.

Plain tensor code with no Lightning import. In the spirit of model-editing methods (ROME / MEMIT, Meng et al. 2022):
among all changes ``dW`` of the last layer that give each forget instance its wanted logit change, take the one that
changes the layer's outputs least on a set of protected inputs (anchors, shifted copies, a retained sample), i.e.

    min_dW  || dW H_p^T ||^2 / n_p + lam || dW ||^2   subject to   dW h_i = d_i  for every forget instance i,

with ``h`` the layer's input (the penultimate features, plus a 1 for the bias). With ``C = H_p^T H_p / n_p + lam I``
the solution is ``dW = D (H_f C^-1 H_f^T)^+ H_f C^-1``. It costs one forward pass over the protected inputs and a
``d x d`` solve, and needs no optimiser step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from lightning_unlearn.functional.losses import runner_up_classes
from lightning_unlearn.functional.pgd import eval_mode


def last_linear(model: nn.Module) -> nn.Linear | None:
    """The ``nn.Linear`` registered last in ``model`` (its classification head for the usual architectures).

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> last_linear(model) is model[3]
        True
    """
    found = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            found = module
    return found


@contextmanager
def _capture_input(layer: nn.Module, store: list[Tensor]) -> Iterator[None]:
    handle = layer.register_forward_hook(lambda _m, args, _out: store.append(args[0].detach().flatten(1)))
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def head_features(model: nn.Module, head: nn.Linear, inputs: Tensor, batch_size: int = 1024) -> tuple[Tensor, Tensor]:
    """``(features, logits)``: the inputs of ``head`` (float64) and the model's logits on ``inputs``, in eval mode."""
    store: list[Tensor] = []
    logits = []
    with eval_mode(model), _capture_input(head, store):
        for chunk in inputs.split(batch_size):
            logits.append(model(chunk).float())
    return torch.cat(store).double(), torch.cat(logits)


def wanted_logit_change(logits: Tensor, labels: Tensor, targets: Tensor | None, margin: float) -> Tensor:
    """``[k, C]``: the smallest change that puts each instance ``margin`` past the boundary: the label's logit down and
    the runner-up's (misclassify) or the target's (relabel, ``targets >= 0``) up, each by half the gap plus margin;
    zero rows for instances already there.

    Examples:
        >>> wanted_logit_change(torch.tensor([[3.0, 1.0, 0.0]]), torch.tensor([0]), None, margin=0.0).tolist()
        [[-1.0, 1.0, 0.0]]
    """
    rows = torch.arange(labels.shape[0], device=logits.device)
    goal = runner_up_classes(logits, labels)
    if targets is not None:
        goal = torch.where(targets >= 0, targets, goal)
    rival = runner_up_classes(logits, goal)  # the best class other than the goal: the one to beat
    gap = (logits[rows, rival] - logits[rows, goal] + margin).clamp_min(0) / 2
    change = torch.zeros_like(logits)
    change[rows, rival] -= gap
    change[rows, goal] += gap
    return change


@torch.no_grad()
def edit_last_layer(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    protected: Tensor,
    targets: Tensor | None = None,
    margin: float = 0.1,
    lam: float = 1e-3,
) -> Tensor:
    """Apply the minimal last-layer edit (module docstring) in place and return ``[k]``: which instances it moved.

    Args:
        model: the classifier; its last ``nn.Linear`` (see :func:`last_linear`) is edited.
        inputs: ``[k, ...]`` instances to move, on the model's device.
        labels: ``[k]`` their labels.
        protected: ``[n, ...]`` inputs whose outputs should change least.
        targets: ``[k]`` relabel targets (``-1``: misclassify) or ``None``.
        margin: how far past the boundary (in logits) each instance is put.
        lam: ridge term of the protected covariance, relative to its mean eigenvalue.

    Returns:
        A ``[k]`` boolean tensor: the instances given a non-zero change (already-unlearned ones are left as they are).

    Raises:
        ValueError: if the model has no ``nn.Linear`` layer.

    Examples:
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> x, y = torch.rand(2, 4), torch.tensor([0, 1])
        >>> y = model(x).argmax(-1)  # instances the model classifies as their label
        >>> _ = edit_last_layer(model, x, y, protected=torch.rand(64, 4))
        >>> bool((model(x).argmax(-1) != y).all())
        True
    """
    head = last_linear(model)
    if head is None:
        raise ValueError("`model` has no nn.Linear layer: the last-layer edit needs a linear classification head.")
    h_f, logits = head_features(model, head, inputs)
    h_p, _ = head_features(model, head, protected)
    change = wanted_logit_change(logits, labels, targets, margin).double()
    moved = change.abs().sum(-1) > 0
    if not bool(moved.any()):
        return moved
    with_bias = head.bias is not None
    if with_bias:
        h_f = torch.cat([h_f, torch.ones_like(h_f[:, :1])], 1)
        h_p = torch.cat([h_p, torch.ones_like(h_p[:, :1])], 1)
    h_f, change = h_f[moved], change[moved]
    cov = h_p.T @ h_p / max(h_p.shape[0], 1)
    cov += lam * cov.diagonal().mean().clamp_min(1e-12) * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    solved = torch.linalg.solve(cov, h_f.T)  # C^-1 H_f^T, [d, m]
    gram = h_f @ solved  # H_f C^-1 H_f^T, [m, m]
    delta = change.T @ torch.linalg.pinv(gram) @ solved.T  # [C, d]
    if with_bias:
        head.bias.add_(delta[:, -1].to(head.bias.dtype))
        delta = delta[:, :-1]
    head.weight.add_(delta.to(head.weight.dtype))
    return moved
