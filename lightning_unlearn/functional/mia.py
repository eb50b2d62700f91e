"""Membership inference: signals of a model on instances and a logistic-regression attack, in plain torch.

The attack is fitted to tell members (the retained training data) from non-members (the test data) by three signals of
the model on each instance: confidence in the true label, prediction entropy and cross-entropy loss. Applied to the
forget set, the share of instances it calls non-member is the *MIA efficacy* (higher = the instances look less like
training data). This is the confidence/entropy/loss attack used across the unlearning literature (SalUn, l1-sparse),
fitted with full-batch gradient descent in torch instead of scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def membership_signals(logits: Tensor, labels: Tensor) -> Tensor:
    """``[B, 3]`` features per instance: probability of the label, entropy of the prediction, cross-entropy loss.

    Examples:
        >>> membership_signals(torch.tensor([[10.0, 0.0]]), torch.tensor([0])).round(decimals=3).tolist()
        [[1.0, 0.0, 0.0]]
    """
    logp = F.log_softmax(logits.float(), dim=-1)
    prob = logp.exp()
    confidence = prob.gather(1, labels.view(-1, 1)).squeeze(1)
    entropy = -(prob * logp).sum(-1)
    loss = F.nll_loss(logp, labels, reduction="none")
    return torch.stack([confidence, entropy, loss], dim=1)


@dataclass
class MembershipAttack:
    """A fitted logistic-regression attack on standardised membership signals."""

    mean: Tensor
    std: Tensor
    weight: Tensor
    bias: Tensor

    def member_probability(self, signals: Tensor) -> Tensor:
        """Probability that each instance is a training member."""
        z = (signals - self.mean.to(signals)) / self.std.to(signals)
        return torch.sigmoid(z @ self.weight.to(signals) + self.bias.to(signals))

    def efficacy(self, signals: Tensor) -> float:
        """Share of instances called non-member (member probability below 0.5); ``nan`` for none."""
        if signals.shape[0] == 0:
            return float("nan")
        return float((self.member_probability(signals) < 0.5).float().mean())


def fit_membership_attack(
    member_signals: Tensor, nonmember_signals: Tensor, steps: int = 500, lr: float = 0.1, l2: float = 1e-3
) -> MembershipAttack:
    """Fit a class-balanced logistic regression (members = 1) by full-batch Adam.

    Raises:
        ValueError: if either set is empty or the feature counts differ.

    Examples:
        >>> members = torch.tensor([[0.9, 0.1, 0.1]]).repeat(20, 1)
        >>> others = torch.tensor([[0.5, 0.9, 0.7]]).repeat(20, 1)
        >>> attack = fit_membership_attack(members, others)
        >>> attack.efficacy(others), attack.efficacy(members)
        (1.0, 0.0)
    """
    if member_signals.shape[0] == 0 or nonmember_signals.shape[0] == 0:
        raise ValueError(
            "`member_signals` and `nonmember_signals` must both be non-empty, got"
            f" {member_signals.shape[0]} and {nonmember_signals.shape[0]} instances."
        )
    if member_signals.shape[1] != nonmember_signals.shape[1]:
        raise ValueError(
            f"signals must have the same number of features, got {member_signals.shape[1]} and"
            f" {nonmember_signals.shape[1]}."
        )
    x = torch.cat([member_signals, nonmember_signals]).float().detach()
    y = torch.cat([torch.ones(len(member_signals)), torch.zeros(len(nonmember_signals))]).to(x)
    weights = torch.where(y > 0, 0.5 / len(member_signals), 0.5 / len(nonmember_signals))
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    w = torch.zeros(x.shape[1], device=x.device, requires_grad=True)
    b = torch.zeros((), device=x.device, requires_grad=True)
    optimizer = torch.optim.Adam([w, b], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            loss = (F.binary_cross_entropy_with_logits(z @ w + b, y, reduction="none") * weights).sum()
            loss = loss + l2 * w.pow(2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return MembershipAttack(mean=mean, std=std, weight=w.detach(), bias=b.detach())
