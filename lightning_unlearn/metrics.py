"""torchmetrics metrics of an unlearning request, and the standalone membership-inference check.

| logged name | meaning | when |
|---|---|---|
| ``forget/acc`` | share of forget instances still predicted as their original label (goal: 0) | logging steps |
| ``forget/target_acc`` | relabel mode: share predicted as their target (goal: 1) | logging steps |
| ``forget/remaining`` | instances still to unlearn | every stop check |
| ``anchor/agreement`` | share of anchors still given the pre-trained model's label | every validation epoch |
| ``{name}/acc`` | accuracy on the evaluation set ``name`` (e.g. ``retain``, ``test``) | every validation epoch |
| ``{name}/drop`` | pre-trained accuracy on ``name`` minus current accuracy | every validation epoch |
| ``mia/efficacy`` | share of forget instances a membership-inference attack calls non-member | end of request |
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from lightning_unlearn.functional.evaluation import predict
from lightning_unlearn.functional.metrics import as_preds, check_preds, forget_counts, share
from lightning_unlearn.functional.mia import fit_membership_attack, membership_signals


class _ForgetCounts(Metric):
    """Counts shared by the forget metrics; summed across processes."""

    is_differentiable = False
    full_state_update = False
    total: Tensor
    remembered: Tensor
    relabel_total: Tensor
    on_target: Tensor
    to_go: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in ("total", "remembered", "relabel_total", "on_target", "to_go"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, labels: Tensor, targets: Tensor | None = None) -> None:
        """Add a batch: ``preds`` are classes ``[B]`` or logits ``[B, C]``; ``targets`` of ``-1`` mean misclassify."""
        for name, count in forget_counts(preds, labels, targets)._asdict().items():
            setattr(self, name, getattr(self, name) + count)


class ForgetAccuracy(_ForgetCounts):
    """Share of forget instances still predicted as their original label; 0 once all are unlearned.

    Examples:
        >>> metric = ForgetAccuracy()
        >>> metric.update(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 0]))
        >>> metric.compute()
        tensor(0.5000)
    """

    higher_is_better = False

    def compute(self) -> Tensor:
        return share(self.remembered, self.total)


class ForgetTargetAccuracy(_ForgetCounts):
    """Relabel mode: share of instances predicted as their target (``nan`` when no instance has a target).

    Examples:
        >>> metric = ForgetTargetAccuracy()
        >>> metric.update(torch.tensor([3, 1, 2]), torch.tensor([0, 0, 0]), torch.tensor([3, 2, -1]))
        >>> metric.compute()
        tensor(0.5000)
    """

    higher_is_better = True

    def compute(self) -> Tensor:
        return share(self.on_target, self.relabel_total)


class ForgetRemaining(_ForgetCounts):
    """Number of forget instances still to unlearn.

    Examples:
        >>> metric = ForgetRemaining()
        >>> metric.update(torch.tensor([0, 1, 2]), torch.tensor([0, 0, 0]), torch.tensor([-1, 2, 2]))
        >>> metric.compute()
        tensor(2)
    """

    higher_is_better = False

    def compute(self) -> Tensor:
        return self.to_go.clone()


class AnchorAgreement(Metric):
    """Share of adversarial anchors still given the label the pre-trained model gave them.

    Examples:
        >>> metric = AnchorAgreement()
        >>> metric.update(torch.tensor([1, 1, 0, 0]), torch.tensor([1, 0, 0, 0]))
        >>> metric.compute()
        tensor(0.7500)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    agree: Tensor
    total: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("agree", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, reference: Tensor) -> None:
        preds = as_preds(preds)
        check_preds(preds, reference, "reference")
        self.agree += (preds == reference).sum()
        self.total += reference.numel()

    def compute(self) -> Tensor:
        return share(self.agree, self.total)


class MIAEfficacy(Metric):
    """Membership-inference efficacy on the forget set.

    Accumulates signals (confidence, entropy, loss) for three groups: ``"member"`` (retained training data),
    ``"nonmember"`` (test data) and ``"forget"``; ``compute`` fits the attack on members vs non-members and returns the
    share of forget instances it calls non-member. Signals are concatenated across processes.

    Examples:
        >>> metric = MIAEfficacy()
        >>> logits_members = torch.tensor([[8.0, 0.0]]).repeat(20, 1)
        >>> logits_others = torch.tensor([[0.5, 0.0]]).repeat(20, 1)
        >>> metric.update(logits_members, torch.zeros(20, dtype=torch.long), group="member")
        >>> metric.update(logits_others, torch.zeros(20, dtype=torch.long), group="nonmember")
        >>> metric.update(logits_others[:4], torch.zeros(4, dtype=torch.long), group="forget")
        >>> metric.compute()
        tensor(1.)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    GROUPS = ("member", "nonmember", "forget")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for group in self.GROUPS:
            self.add_state(group, default=[], dist_reduce_fx="cat")

    def update(self, logits: Tensor, labels: Tensor, group: str) -> None:
        """Add logits ``[B, C]`` of instances of ``group`` (``"member"``, ``"nonmember"`` or ``"forget"``).

        Raises:
            ValueError: if ``group`` is not one of these.
        """
        if group not in self.GROUPS:
            raise ValueError(f"`group` must be one of {self.GROUPS}, got {group!r}.")
        getattr(self, group).append(membership_signals(logits, labels))

    def compute(self) -> Tensor:
        groups = [_cat(getattr(self, g)) for g in self.GROUPS]
        if any(g.shape[0] == 0 for g in groups):
            return torch.tensor(float("nan"))
        attack = fit_membership_attack(groups[0], groups[1])
        return torch.tensor(attack.efficacy(groups[2]))


def _cat(state: Tensor | list[Tensor]) -> Tensor:
    if isinstance(state, Tensor):
        return state
    return torch.cat(state) if state else torch.zeros(0, 3)


def mia_efficacy(
    model: nn.Module,
    retain: Iterable[Any],
    test: Iterable[Any],
    forget: Iterable[Any],
) -> float:
    """Standalone membership inference on any model and three loaders of ``(inputs, labels, ...)`` batches.

    Fits the attack on ``retain`` (members) vs ``test`` (non-members) and returns the share of ``forget`` it calls
    non-member. The model is evaluated in eval mode (each submodule's mode restored).

    Examples:
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> model = nn.Linear(4, 2)
        >>> data = DataLoader(TensorDataset(torch.rand(16, 4), torch.randint(0, 2, (16,))), batch_size=8)
        >>> 0.0 <= mia_efficacy(model, data, data, data) <= 1.0
        True
    """
    metric = MIAEfficacy()
    for group, loader in (("member", retain), ("nonmember", test), ("forget", forget)):
        for batch in loader:
            metric.update(predict(model, batch[0]), batch[1].to(next(model.parameters()).device), group=group)
    return float(metric.compute())
