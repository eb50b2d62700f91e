"""Forget requests as datasets."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

from lightning_unlearn.functional.pgd import eval_mode

if TYPE_CHECKING:
    from lightning_unlearn.module import UnlearningModule

NO_TARGET = -1
"""The target stored for an instance that is to be misclassified rather than relabelled."""


class ForgetSet(Dataset[tuple[Tensor, Tensor, Tensor]]):
    """The instances of one unlearning request: inputs, their labels and, in relabel mode, their new targets.

    Items are ``(input, label, target)`` triples; ``target`` is ``-1`` (:data:`NO_TARGET`) in misclassify mode, so the
    default collate function batches both modes alike.

    Args:
        inputs: ``[k, ...]`` floating-point inputs, finite.
        labels: ``[k]`` integer labels (the training labels, or the pre-trained model's predictions).
        targets: optional ``[k]`` integer targets, each different from its label (relabel mode).

    Raises:
        ValueError: if the set is empty, shapes disagree, labels or targets are not 1-D integers, inputs are not
            finite floats, or a target is negative or equal to its label.

    Examples:
        >>> forget = ForgetSet(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))
        >>> len(forget), forget.mode
        (4, 'misclassify')
        >>> forget[0][2].item()
        -1
        >>> ForgetSet(torch.rand(2, 3), torch.tensor([0, 1]), targets=torch.tensor([1, 0])).mode
        'relabel'
    """

    def __init__(self, inputs: Tensor, labels: Tensor, targets: Tensor | None = None) -> None:
        inputs, labels, targets = _validated(inputs, labels, targets)
        self.inputs = inputs
        self.labels = labels
        self.targets = targets if targets is not None else torch.full_like(labels, NO_TARGET)
        self.mode = "misclassify" if targets is None else "relabel"

    @classmethod
    def from_dataset(
        cls,
        dataset: Dataset[Any],
        indices: Sequence[int] | Tensor,
        targets: Sequence[int] | Tensor | None = None,
    ) -> ForgetSet:
        """Build a request from any map-style dataset whose items are ``(input, label, ...)``.

        Args:
            dataset: the training dataset.
            indices: positions of the instances to forget.
            targets: optional new labels, one per index (relabel mode).

        Raises:
            ValueError: if ``indices`` is empty, has duplicates or points outside the dataset, plus the checks of
                :class:`ForgetSet`.

        Examples:
            >>> from torch.utils.data import TensorDataset
            >>> data = TensorDataset(torch.rand(10, 3), torch.arange(10) % 2)
            >>> ForgetSet.from_dataset(data, [1, 4]).labels.tolist()
            [1, 0]
        """
        idx = torch.as_tensor(indices, dtype=torch.long).flatten()
        if idx.numel() == 0:
            raise ValueError("`indices` must name at least one instance, got an empty sequence.")
        if idx.unique().numel() != idx.numel():
            raise ValueError(f"`indices` must not repeat an instance, got {idx.tolist()}.")
        size = len(dataset)  # type: ignore[arg-type]
        if int(idx.min()) < 0 or int(idx.max()) >= size:
            raise ValueError(
                f"`indices` must lie in [0, {size}), got values from {int(idx.min())} to {int(idx.max())}."
            )
        items = [dataset[int(i)] for i in idx]
        inputs = torch.stack([torch.as_tensor(item[0]) for item in items])
        labels = torch.as_tensor([int(item[1]) for item in items], dtype=torch.long)
        return cls(inputs, labels, None if targets is None else torch.as_tensor(targets))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.inputs[index], self.labels[index], self.targets[index]


def _validated(inputs: Tensor, labels: Tensor, targets: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    if not isinstance(inputs, Tensor) or not inputs.is_floating_point():
        raise ValueError(f"`inputs` must be a floating-point tensor, got {_describe(inputs)}.")
    if inputs.shape[0] == 0:
        raise ValueError("`inputs` must hold at least one instance, got an empty tensor: a request needs instances.")
    if not torch.isfinite(inputs).all():
        raise ValueError("`inputs` must be finite, got NaN or infinite values.")
    labels = _integer_vector("labels", labels, inputs.shape[0])
    if int(labels.min()) < 0:
        raise ValueError(f"`labels` must be >= 0, got {int(labels.min())}.")
    if targets is not None:
        targets = _integer_vector("targets", targets, inputs.shape[0])
        if int(targets.min()) < 0:
            raise ValueError(f"`targets` must be >= 0, got {int(targets.min())}.")
        same = (targets == labels).nonzero().flatten()
        if same.numel():
            raise ValueError(
                f"`targets` must differ from `labels`; positions {same.tolist()} have target equal to label."
            )
    return inputs, labels, targets


def _integer_vector(name: str, value: Tensor, length: int) -> Tensor:
    value = torch.as_tensor(value)
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise ValueError(f"`{name}` must be an integer tensor, got dtype {value.dtype}.")
    if value.dim() != 1:
        raise ValueError(f"`{name}` must be 1-D ([k]), got shape {tuple(value.shape)}.")
    if value.shape[0] != length:
        raise ValueError(f"`{name}` must have one entry per input ({length}), got {value.shape[0]}.")
    return value.long()


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of dtype {value.dtype}"
    return type(value).__name__


def unpadded_shard_size(loader: object) -> int | None:
    """This process's share of the dataset without the repeats a padding ``DistributedSampler`` adds (``None`` when
    the loader has no such sampler).

    Examples:
        >>> from torch.utils.data import DataLoader
        >>> data = list(range(5))
        >>> unpadded_shard_size(DataLoader(data, sampler=DistributedSampler(data, num_replicas=2, rank=1)))
        2
    """
    sampler = getattr(loader, "sampler", None)
    if not isinstance(sampler, DistributedSampler):
        sampler = getattr(getattr(loader, "batch_sampler", None), "sampler", None)
    if not isinstance(sampler, DistributedSampler) or sampler.drop_last:
        return None
    return len(range(sampler.rank, len(sampler.dataset), sampler.num_replicas))  # type: ignore[arg-type]


def split_forget_batch(batch: Any, mode: str | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(inputs, labels, targets or None)`` from a ``(x, y)`` or ``(x, y, t)`` forget batch: ``mode="misclassify"``
    drops the targets, ``"relabel"`` requires one for every instance, ``None`` follows the batch (targets of
    :data:`NO_TARGET` mean misclassify).

    Raises:
        ValueError: if the batch is not such a tuple, or ``mode="relabel"`` and the batch has no targets.

    Examples:
        >>> x, y = torch.rand(2, 3), torch.tensor([0, 1])
        >>> split_forget_batch((x, y, torch.tensor([-1, -1])))[2] is None
        True
    """
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        kind = (
            f"a {type(batch).__name__} of {len(batch)} items"
            if isinstance(batch, (tuple, list))
            else type(batch).__name__
        )
        raise ValueError(f"a forget batch must be (inputs, labels) or (inputs, labels, targets), got {kind}.")
    x, y = batch[0], batch[1]
    t = batch[2] if len(batch) == 3 else None
    if mode == "misclassify":
        t = None
    elif mode == "relabel" and (t is None or bool((t == NO_TARGET).any())):
        raise ValueError("`mode='relabel'` needs a target for every forget instance; the batch has none for some.")
    if t is not None and bool((t == NO_TARGET).all()):
        t = None
    return x, y, t


def check_logits(classifier: torch.nn.Module, x: Tensor, num_classes: int) -> None:
    """Raise unless ``classifier`` (in eval mode, each submodule's mode restored) maps ``x`` to ``[B, num_classes]``.

    Raises:
        ValueError: naming the shape found and the one expected.
    """
    with torch.no_grad(), eval_mode(classifier):
        out = classifier(x[:2])
    expected = (min(2, x.shape[0]), num_classes)
    if not isinstance(out, Tensor) or tuple(out.shape) != expected:
        found = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"`classifier` must return [B, num_classes] logits, i.e. {list(expected)} here, got {found}; check"
            " `num_classes` or the classifier's output."
        )


def collect_forget(module: UnlearningModule, loader: Iterable[Any] | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """This process's whole forget set from a dataloader (the ``fit``'s training dataloader), on ``module``'s device,
    each instance once (the repeats of a padding ``DistributedSampler`` dropped), in ``module``'s mode, checked against
    ``num_classes`` and the classifier's output.

    Raises:
        ValueError: if there is no loader, it is empty, or labels, targets or the classifier's output do not
            match ``num_classes``.
    """
    if loader is None:
        raise ValueError("InstanceUnlearning needs the forget set as the training dataloader of `fit`.")
    xs, ys, ts = [], [], []
    any_target = False
    for batch in loader:
        x, y, t = module.split_batch(batch)
        xs.append(x)
        ys.append(y)
        ts.append(t if t is not None else torch.full_like(y, -1))
        any_target = any_target or t is not None
    if not xs:
        raise ValueError("the forget set is empty: `fit` needs at least one instance to unlearn.")
    x_all = torch.cat(xs).to(module.device)
    y_all = torch.cat(ys).to(module.device).long()
    t_all = torch.cat(ts).to(module.device).long() if any_target else None
    keep = unpadded_shard_size(loader)
    if keep is not None:  # DistributedSampler repeats instances to even out shards: count each one once
        x_all, y_all = x_all[:keep], y_all[:keep]
        t_all = t_all[:keep] if t_all is not None else None
    if y_all.numel() == 0:
        return x_all, y_all, t_all
    c = module.num_classes
    if int(y_all.min()) < 0 or int(y_all.max()) >= c:
        raise ValueError(f"forget labels must lie in [0, {c}) (num_classes={c}), got values up to {int(y_all.max())}.")
    if t_all is not None and int(t_all.max()) >= c:
        raise ValueError(f"relabel targets must lie in [0, {c}) (num_classes={c}), got {int(t_all.max())}.")
    module.check_output(x_all)
    return x_all, y_all, t_all
