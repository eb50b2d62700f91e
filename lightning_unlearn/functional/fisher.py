"""A closed-form edit of a classifier's last layers in the Fisher metric of protected inputs. Plain torch, no Lightning.

The last-layer edit (:mod:`~lightning_unlearn.functional.edit`) moves the forget instances across the boundary with
the smallest change of the head's outputs on protected inputs; it cannot reach instances whose head features are
linearly dependent, and one layer is a narrow place to put a change. This edit spreads the change over the last
``layers`` linear/convolutional layers and measures it in their K-FAC Fisher metric (Martens and Grosse, 2015) on the
protected inputs: a constrained Gauss-Newton step. Each iteration takes the per-instance gradients ``G_i`` of the
margins ``m_i`` (label logit minus the best other one; relabel: best other minus the target's), preconditions them by
the Kronecker factors, ``P_i = S^-1 G_i A^-1`` (``A``: covariance of the layer's input rows on the protected inputs;
``S``: covariance of the gradient at its output, labels drawn from the model's own softmax), and applies the smallest
change in that metric that moves every remembered instance to ``-margin`` and leaves the others where they are:
``dW = sum_i alpha_i P_i`` with ``alpha = pinv(K) want``, ``K_ij = <G_i, P_j>``. No optimiser, no step size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_unlearn.functional.pgd import eval_mode

EDITABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)
Editable = nn.Linear | nn.Conv1d | nn.Conv2d


def editable_layers(model: nn.Module, count: int) -> list[Editable]:
    """The last ``count`` linear or (ungrouped) 1-D/2-D convolutional layers of ``model``, in registration order.

    Examples:
        >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> [type(m).__name__ for m in editable_layers(model, 2)]
        ['Linear', 'Linear']
    """
    found: list[Editable] = [m for m in model.modules() if isinstance(m, EDITABLE) and getattr(m, "groups", 1) == 1]
    return found[-count:] if count > 0 else []


def margins(logits: Tensor, labels: Tensor, targets: Tensor | None = None) -> Tensor:
    """``[k]`` margins, positive while an instance is not yet unlearned: label logit minus the best other one
    (misclassify), or the best logit other than the target minus the target's (relabel, ``targets >= 0``).

    Examples:
        >>> margins(torch.tensor([[3.0, 1.0, 0.0]]), torch.tensor([0])).tolist()
        [2.0]
        >>> margins(torch.tensor([[3.0, 1.0, 0.0]]), torch.tensor([0]), torch.tensor([1])).tolist()
        [2.0]
    """
    goal = labels if targets is None else torch.where(targets >= 0, targets, labels)
    own = logits.gather(1, goal[:, None]).squeeze(1)
    other = logits.scatter(1, goal[:, None], float("-inf")).max(1).values
    relabel = torch.zeros_like(own, dtype=torch.bool) if targets is None else targets >= 0
    return torch.where(relabel, other - own, own - other)


def _rows(layer: nn.Module, inputs: Tensor) -> Tensor:
    """The rows ``layer``'s weight, as an ``[out, d]`` matrix with the bias as its last column, multiplies."""
    if isinstance(layer, nn.Conv2d):
        cols = F.unfold(inputs, layer.kernel_size, layer.dilation, layer.padding, layer.stride)  # type: ignore[arg-type]
        rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    elif isinstance(layer, nn.Conv1d):
        k, d, p, s = layer.kernel_size[0], layer.dilation[0], layer.padding, layer.stride[0]
        pad = p[0] if isinstance(p, tuple) else 0
        cols = F.unfold(inputs.unsqueeze(2), (1, k), (1, d), (0, pad), (1, s))
        rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    else:
        rows = inputs.reshape(-1, inputs.shape[-1])
    if layer.bias is not None:
        rows = torch.cat([rows, torch.ones_like(rows[:, :1])], 1)
    return rows.double()


def _matrix(layer: nn.Module, weight: Tensor, bias: Tensor | None) -> Tensor:
    matrix = weight.reshape(weight.shape[0], -1)
    return torch.cat([matrix, bias[:, None]], 1) if bias is not None else matrix


def kfac_factors(
    model: nn.Module,
    layers: list[Editable],
    protected: Tensor,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
) -> list[tuple[Tensor, Tensor]]:
    """Per layer, K-FAC's ``(A, S)`` on ``protected`` (eval mode, float64): the covariance of the input rows and of the
    output gradient of the loss of labels drawn from the model's own softmax (summed over positions for convolutions).
    """
    inputs: list[Tensor] = []
    outputs: list[Tensor] = []

    def keep(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
        inputs.append(args[0].detach())
        out.retain_grad()
        outputs.append(out)

    a_sums = [torch.zeros(0)] * len(layers)
    s_sums = [torch.zeros(0)] * len(layers)
    rows, count = [0] * len(layers), 0
    handles = [layer.register_forward_hook(keep) for layer in layers]
    try:
        with eval_mode(model), torch.enable_grad():
            for chunk in protected.split(batch_size):
                inputs.clear()
                outputs.clear()
                logits = model(chunk)
                drawn = torch.multinomial(F.softmax(logits.detach().float(), -1).cpu(), 1, generator=generator)
                F.cross_entropy(logits, drawn.squeeze(1).to(logits.device), reduction="sum").backward()
                for i, (layer, x, out) in enumerate(zip(layers, inputs, outputs)):
                    r = _rows(layer, x)
                    g = out.grad.double()  # type: ignore[union-attr]
                    g = g.movedim(1, -1).reshape(-1, g.shape[1]) if g.dim() > 2 else g
                    a_sums[i] = r.T @ r if rows[i] == 0 else a_sums[i] + r.T @ r
                    s_sums[i] = g.T @ g if count == 0 else s_sums[i] + g.T @ g
                    rows[i] += r.shape[0]
                count += chunk.shape[0]
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
    return [(a / max(n, 1), s / max(count, 1)) for a, s, n in zip(a_sums, s_sums, rows)]


def damped_inverse(matrix: Tensor, lam: float) -> Tensor:
    """``(M + lam * mean(diag M) * I)^-1``.

    Examples:
        >>> damped_inverse(torch.eye(2, dtype=torch.float64) * 4, 0.25).diagonal().tolist()
        [0.2, 0.2]
    """
    eye = torch.eye(matrix.shape[0], dtype=matrix.dtype, device=matrix.device)
    return torch.linalg.inv(matrix + lam * matrix.diagonal().mean().clamp_min(1e-12) * eye)


def fisher_edit(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    protected: Tensor,
    targets: Tensor | None = None,
    layers: int = 2,
    margin: float = 0.1,
    lam: float = 1e-2,
    iterations: int = 20,
    generator: torch.Generator | None = None,
    restore: tuple[Tensor, Tensor, Tensor] | None = None,
) -> int:
    """Apply the edit of the module docstring in place; returns how many instances are still not unlearned.

    Args:
        model: the classifier (its last ``layers`` editable layers change; see :func:`editable_layers`).
        inputs: ``[k, ...]`` instances to unlearn, on the model's device.
        labels: ``[k]`` their labels.
        protected: ``[n, ...]`` inputs whose outputs should change least (anchors, shifted copies, a retained sample).
        targets: ``[k]`` relabel targets (``-1``: misclassify) or ``None``.
        layers: how many of the last layers to edit.
        margin: how far past the boundary (in logits) each instance is put.
        lam: damping of both Kronecker factors, relative to their mean eigenvalue.
        iterations: Gauss-Newton iterations at most (each re-linearises at the current weights).
        generator: CPU generator of the labels drawn for ``S``.
        restore: ``(inputs, labels, margins)``: more constraints, each held input's margin for its label moved to the
            given value (e.g. a reference model's margins on those inputs: the edit then also undoes earlier changes
            there) while the forget instances are moved; ``None`` for none.

    Raises:
        ValueError: if the model has no editable layer or an argument is out of range.

    Examples:
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> x = torch.rand(3, 4)
        >>> y = model(x).argmax(-1)
        >>> fisher_edit(model, x, y, protected=torch.rand(64, 4))
        0
        >>> bool((model(x).argmax(-1) != y).all())
        True
    """
    chosen = editable_layers(model, layers)
    if not chosen:
        raise ValueError("`model` has no nn.Linear, nn.Conv1d or nn.Conv2d layer to edit.")
    if iterations <= 0 or lam <= 0 or margin < 0:
        raise ValueError(f"need iterations > 0, lam > 0, margin >= 0; got {iterations}, {lam}, {margin}.")
    factors = kfac_factors(model, chosen, protected if len(protected) else inputs, generator)
    inverses = [(damped_inverse(a, lam), damped_inverse(s, lam)) for a, s in factors]
    params = [p for layer in chosen for p in layer.parameters()]
    k = len(inputs)
    rows, row_labels = inputs, labels
    if restore is not None:
        rows, row_labels = torch.cat([inputs, restore[0]]), torch.cat([labels, restore[1]])
    with eval_mode(model):
        for _ in range(iterations):
            with torch.no_grad():
                current = margins(model(inputs).float(), labels, targets)
            active = current > -margin
            if not bool(active.any()):
                break
            want = torch.where(active, -(current + margin), torch.zeros_like(current)).double()
            if restore is not None:
                with torch.no_grad():
                    held = margins(model(restore[0]).float(), restore[1])
                want = torch.cat([want, (restore[2].to(held) - held).double()])
            grads: list[list[Tensor]] = []
            for i in range(len(rows)):  # per-row gradients of the margin, each layer as an [out, d] matrix
                sliced = targets[i : i + 1] if targets is not None and i < k else None
                value = margins(model(rows[i : i + 1]).float(), row_labels[i : i + 1], sliced).sum()
                found = torch.autograd.grad(value, params)
                grads.append(_split(chosen, found))
            gram = torch.zeros(len(rows), len(rows), dtype=torch.float64, device=inputs.device)
            pre = []
            for j, (a_inv, s_inv) in enumerate(inverses):
                g = torch.stack([row[j] for row in grads])  # [rows, out, d]
                p = s_inv @ g @ a_inv
                gram += g.flatten(1) @ p.flatten(1).T
                pre.append(p)
            alpha = torch.linalg.pinv(gram) @ want
            with torch.no_grad():
                for layer, p in zip(chosen, pre):
                    delta = torch.einsum("a,aij->ij", alpha, p)
                    weight = delta[:, :-1] if layer.bias is not None else delta
                    layer.weight.add_(weight.reshape(layer.weight.shape).to(layer.weight.dtype))
                    if layer.bias is not None:
                        layer.bias.add_(delta[:, -1].to(layer.bias.dtype))
        with torch.no_grad():
            return int((margins(model(inputs).float(), labels, targets) >= 0).sum())


def _split(layers: list[Editable], grads: tuple[Tensor, ...]) -> list[Tensor]:
    """The flat tuple of parameter gradients as one ``[out, d]`` matrix (bias last) per layer, float64."""
    out, at = [], 0
    for layer in layers:
        weight = grads[at].double()
        bias = grads[at + 1].double() if layer.bias is not None else None
        at += 2 if layer.bias is not None else 1
        out.append(_matrix(layer, weight, bias))
    return out
