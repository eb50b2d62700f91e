"""Evaluation helpers: accuracy of a model on tensors, in eval mode, without touching its train/eval state."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from lightning_unlearn.functional.pgd import eval_mode


@torch.no_grad()
def predict(model: nn.Module, inputs: Tensor, batch_size: int = 1024) -> Tensor:
    """Logits of ``model`` on ``inputs`` in eval mode (each submodule's mode restored), in chunks.

    Examples:
        >>> predict(nn.Linear(3, 2), torch.rand(5, 3)).shape
        torch.Size([5, 2])
    """
    device = next(model.parameters()).device
    with eval_mode(model):
        return torch.cat([model(chunk.to(device)).float() for chunk in inputs.split(batch_size)])


def accuracy(model: nn.Module, inputs: Tensor, labels: Tensor, batch_size: int = 1024) -> float:
    """Share of ``inputs`` that ``model`` predicts as ``labels`` (``nan`` for an empty set).

    Examples:
        >>> model = nn.Linear(2, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.eye(2))
        >>> accuracy(model, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
        0.5
    """
    if inputs.shape[0] == 0:
        return float("nan")
    preds = predict(model, inputs, batch_size).argmax(-1).cpu()
    return float((preds == labels.cpu()).float().mean())


@contextmanager
def with_weights(model: nn.Module, weights: Mapping[str, Tensor] | None) -> Iterator[nn.Module]:
    """``model`` holding ``weights`` (a ``state_dict``) inside the block, its own weights put back after (``None``:
    unchanged).

    Examples:
        >>> model = nn.Linear(1, 1, bias=False)
        >>> with with_weights(model, {"weight": torch.zeros(1, 1)}):
        ...     float(model(torch.ones(1, 1)))
        0.0
        >>> float(model.weight.abs().sum()) > 0
        True
    """
    if weights is None:
        yield model
        return
    current = {n: v.detach().clone() for n, v in model.state_dict().items()}
    model.load_state_dict(weights)
    try:
        yield model
    finally:
        model.load_state_dict(current)
