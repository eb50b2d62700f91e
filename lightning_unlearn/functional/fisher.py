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
    roots = [(torch.linalg.cholesky(a_inv), torch.linalg.cholesky(s_inv)) for a_inv, s_inv in inverses]
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
            row_targets = None
            if targets is not None:
                row_targets = torch.cat([targets, torch.full_like(row_labels[k:], -1)])
            factors_of_rows = row_gradients(model, chosen, rows, row_labels, row_targets)
            gram = torch.zeros(len(rows), len(rows), dtype=torch.float64, device=inputs.device)
            for (g, a), (l_a, l_s) in zip(factors_of_rows, roots):  # G_i = g_i^T a_i, [P, out] and [P, d]
                # <G_i, S^-1 G_j A^-1> = <H_i, H_j> with H_i = L_s^T G_i L_a = sum_p (g_ip L_s)^T (a_ip L_a)
                h = torch.einsum("npo,npd->nod", g @ l_s, a @ l_a).flatten(1)
                gram += h @ h.T
            alpha = torch.linalg.pinv(gram) @ want
            with torch.no_grad():
                for layer, (g, a), (a_inv, s_inv) in zip(chosen, factors_of_rows, inverses):
                    delta = s_inv @ torch.einsum("n,npo,npd->od", alpha, g, a) @ a_inv  # sum_i alpha_i S^-1 G_i A^-1
                    weight = delta[:, :-1] if layer.bias is not None else delta
                    layer.weight.add_(weight.reshape(layer.weight.shape).to(layer.weight.dtype))
                    if layer.bias is not None:
                        layer.bias.add_(delta[:, -1].to(layer.bias.dtype))
        with torch.no_grad():
            return int((margins(model(inputs).float(), labels, targets) >= 0).sum())


def row_gradients(
    model: nn.Module,
    layers: list[Editable],
    inputs: Tensor,
    labels: Tensor,
    targets: Tensor | None = None,
    batch_size: int = 64,
) -> list[tuple[Tensor, Tensor]]:
    """Per layer, the gradient of each input's margin (:func:`margins`) with respect to the layer's weight (an
    ``[out, d]`` matrix with the bias as its last column) in factored form ``(g, a)``: ``[n, P, out]`` gradients at
    the layer's output and ``[n, P, d]`` input rows over its ``P`` positions, the gradient of input ``i`` being
    ``g[i].T @ a[i]`` (float64). One batched forward and backward pass per ``batch_size`` inputs, eval mode; each
    layer must run once per forward.

    Examples:
        >>> model = nn.Sequential(nn.Linear(4, 3))
        >>> [(g, a)] = row_gradients(model, [model[0]], torch.ones(2, 4), torch.tensor([0, 1]))
        >>> g.shape, a.shape, (g[0].T @ a[0])[0].tolist()
        (torch.Size([2, 1, 3]), torch.Size([2, 1, 5]), [1.0, 1.0, 1.0, 1.0, 1.0])
    """
    seen: list[tuple[Tensor, Tensor]] = []

    def keep(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
        out.retain_grad()
        seen.append((args[0].detach(), out))

    parts: list[list[tuple[Tensor, Tensor]]] = [[] for _ in layers]
    handles = [layer.register_forward_hook(keep) for layer in layers]
    try:
        with eval_mode(model), torch.enable_grad():
            for at in range(0, len(inputs), batch_size):
                seen.clear()
                chunk = slice(at, at + batch_size)
                sliced = targets[chunk] if targets is not None else None
                margins(model(inputs[chunk]).float(), labels[chunk], sliced).sum().backward()
                if len(seen) != len(layers):
                    raise ValueError(f"each edited layer must run once per forward; hooks saw {len(seen)} calls.")
                for i, (layer, (x, out)) in enumerate(zip(layers, seen)):
                    n, r = x.shape[0], _rows(layer, x)
                    g = out.grad.double()  # type: ignore[union-attr]
                    if isinstance(layer, nn.Linear):
                        g = g.reshape(n, -1, g.shape[-1])
                    else:
                        g = g.reshape(n, g.shape[1], -1).transpose(1, 2)
                    parts[i].append((g, r.reshape(n, -1, r.shape[1])))
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
    return [(torch.cat([g for g, _ in p]), torch.cat([a for _, a in p])) for p in parts]
