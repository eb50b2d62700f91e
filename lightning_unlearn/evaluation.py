"""Measuring a request: the forget set, the evaluation sets, membership inference and the drop in accuracy, in one
place.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from lightning_unlearn.functional.evaluation import predict
from lightning_unlearn.metrics import ForgetAccuracy, ForgetRemaining, ForgetTargetAccuracy, MIAEfficacy

if TYPE_CHECKING:
    import lightning as L

    from lightning_unlearn.module import UnlearningModule
    from lightning_unlearn.request import ForgetPart, Request
    from lightning_unlearn.summary import RequestSummary

#: evaluation sets whose predictions feed membership inference: training members and non-members
MIA_GROUPS = {"retain": "member", "test": "nonmember"}


def accuracies(values: Mapping[str, float]) -> dict[str, float]:
    """``{name: accuracy}`` of each evaluation set among logged ``values`` (``{name}/acc``, the forget set's aside).

    Examples:
        >>> accuracies({"forget/acc": 0.0, "test/acc": 0.9, "mia/efficacy": 0.5})
        {'test': 0.9}
    """
    return {n[:-4]: v for n, v in values.items() if n.endswith("/acc") and not n.startswith("forget/")}


def drops(reference: Mapping[str, float], values: Mapping[str, float]) -> dict[str, float]:
    """``{name}/drop``: how far each evaluation set's accuracy in ``values`` lies below its ``reference`` (both as
    logged, ``{name}/acc``), for the sets in both. The one place a drop is computed.

    Examples:
        >>> drops({"test/acc": 0.99, "forget/acc": 1.0}, {"test/acc": 0.97, "forget/acc": 0.0})
        {'test/drop': 0.020000000000000018}
    """
    now = accuracies(values)
    return {f"{name}/drop": acc - now[name] for name, acc in accuracies(reference).items() if name in now}


def eval_names(loaders: Any) -> list[str]:
    """Names of evaluation dataloaders: the keys of a dict, else ``retain``/``test`` for two loaders, ``val`` for one,
    ``val0``, ``val1``, ... otherwise.

    Examples:
        >>> eval_names({"test": []}), eval_names([[], []]), eval_names([[], [], []])
        (['test'], ['retain', 'test'], ['val0', 'val1', 'val2'])
    """
    if isinstance(loaders, Mapping):
        return [str(k) for k in loaders]
    count = len(loaders) if isinstance(loaders, (list, tuple)) else (0 if loaders is None else 1)
    return {2: ["retain", "test"], 1: ["val"]}.get(count, [f"val{i}" for i in range(count)])


def eval_loaders(trainer: L.Trainer) -> list[tuple[str, Iterable[Any]]]:
    """The evaluation sets of the running ``fit``, named: the validation dataloaders (``fit(val_dataloaders=...)`` or
    the DataModule's ``val_dataloader()``), loaded through the fit loop's ``setup_data()`` if Lightning has not
    loaded them yet (it does so lazily when the first epoch does not validate); none with ``limit_val_batches=0``.
    """
    if trainer.val_dataloaders is None and trainer.limit_val_batches != 0:
        with contextlib.suppress(MisconfigurationException):  # no validation data: the model's default hook raises
            trainer.fit_loop.epoch_loop.val_loop.setup_data()
    loaders = trainer.val_dataloaders
    if loaders is None:
        return []
    iterables = list(loaders.values()) if isinstance(loaders, Mapping) else list(loaders)
    if not isinstance(loaders, (Mapping, list, tuple)):
        iterables = [loaders]
    return list(zip(eval_names(loaders), iterables))


class RequestEvaluator:
    """Measures one request: the forget metrics on whole forget sets (the stop check), and once at the start and once
    at the end every plugin's values and one pass over each evaluation set (accuracy, and membership inference from
    the same predictions when sets named ``retain`` and ``test`` exist); at each validation, the accuracy and drop of
    each evaluation set. Values are reduced across processes: every process calls each method together.

    Args:
        module: the module being unlearned.
        trainer: the running ``Trainer``.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from lightning_unlearn import UnlearningModule
        >>> module = UnlearningModule(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), num_classes=3)
        >>> values = RequestEvaluator(module, None).check_forget([(torch.rand(2, 4), torch.tensor([0, 1]), None)])
        >>> sorted(values)
        ['forget/acc', 'forget/remaining', 'forget/target_acc']
    """

    def __init__(self, module: UnlearningModule, trainer: L.Trainer | None) -> None:
        self.module, self.trainer = module, trainer
        self.reference: dict[str, float] = {}  #: the values measured on the original weights
        self.forget_metrics = MetricCollection(
            {"acc": ForgetAccuracy(), "target_acc": ForgetTargetAccuracy(), "remaining": ForgetRemaining()},
            prefix="forget/",
            compute_groups=False,
        ).to(module.device)
        self._accuracy: dict[str, MulticlassAccuracy] = {}
        self.last_validation: dict[str, float] = {}  #: the values of the last validation

    def check_forget(self, parts: list[ForgetPart], log: bool = False) -> dict[str, float]:
        """The forget metrics on whole forget sets (eval mode), synced across processes; with ``log``,
        ``forget/remaining`` is logged at every call, ``forget/acc`` and ``forget/target_acc`` on logging steps.

        Returns:
            ``{"forget/acc": ..., "forget/target_acc": ..., "forget/remaining": ...}``.
        """
        self.forget_metrics.reset()
        for x, y, t in parts:
            self.forget_metrics.update(predict(self.module.classifier, x), y, t)
        values = {name: float(v) for name, v in self.forget_metrics.compute().items()}
        if log and self.module._trainer is not None:
            every = self.module.logging_step()  # forget/remaining at every check (for monitors), the rest when written
            for name, value in values.items():
                if value == value and (every or name == "forget/remaining"):  # nan: target_acc in misclassify mode
                    bar = name == "forget/remaining"
                    self.module.log(name, value, on_step=True, on_epoch=False, prog_bar=bar, batch_size=1)
        return values

    def measure(self, request: Request) -> dict[str, float]:
        """Forget metrics on every part, the plugins' values, then one pass over each evaluation set (not counted in
        the request's samples): ``summary.before`` at the start, ``summary.after`` at the end.
        """
        values = {**self.check_forget(request.parts), **request.plugin_values()}
        with request.counter.paused():
            return {**values, **self.evaluate(request.forget)}

    def evaluate(self, forget: ForgetPart | None = None) -> dict[str, float]:
        """One pass over each evaluation set: ``{name}/acc`` for each, and with ``forget`` and sets named ``retain``
        and ``test``, ``mia/efficacy`` from the same predictions (synced across processes).
        """
        loaders = eval_loaders(self.trainer) if self.trainer is not None else []
        device = self.module.device
        mia = MIAEfficacy().to(device) if forget is not None and set(MIA_GROUPS) <= {n for n, _ in loaders} else None
        if mia is not None and forget is not None:
            mia.update(predict(self.module.classifier, forget[0]), forget[1], group="forget")
        values = {}
        for name, loader in loaders:
            metric = self._metric(name)
            metric.reset()
            group = MIA_GROUPS.get(name) if mia is not None else None
            for batch in loader:
                x, y = batch[0].to(device), batch[1].to(device)
                logits = predict(self.module.classifier, x)
                metric.update(logits, y)
                if group is not None and mia is not None:
                    mia.update(logits, y, group=group)
            values[f"{name}/acc"] = float(metric.compute())
            metric.reset()
        if mia is not None:
            values["mia/efficacy"] = float(mia.compute())
        return values

    def update(self, dataloader_idx: int, logits: Tensor, labels: Tensor) -> None:
        """Add a validation batch of the evaluation set ``dataloader_idx`` (``UnlearningModule.validation_step``)."""
        trainer = self.trainer if self.trainer is not None else self.module.trainer
        self._metric(eval_names(trainer.val_dataloaders)[dataloader_idx]).update(logits, labels)

    def validation_values(self) -> dict[str, float]:
        """``{name}/acc`` of the validation that just ended and, against the request's reference, ``{name}/drop``
        (metrics reset; the values are kept in :attr:`last_validation`).
        """
        values = {}
        for name, metric in self._accuracy.items():
            if metric.update_called:
                values[f"{name}/acc"] = float(metric.compute())
                metric.reset()
        self.last_validation = {**values, **drops(self.reference, values)}
        return self.last_validation

    def log_outcome(self, summary: RequestSummary) -> None:
        """Write the request's outcome to every logger at the last step, whatever ``log_every_n_steps`` is (the last
        point of each curve is the request's result): every finite value of ``summary.after`` and each drop.
        """
        trainer = self.trainer
        if trainer is None:
            return
        final = {name: value for name, value in summary.after.items() if math.isfinite(value)}
        final.update(drops(summary.before, final))
        for logger in trainer.loggers:
            logger.log_metrics(final, step=trainer.global_step)
            logger.save()

    def _metric(self, name: str) -> MulticlassAccuracy:
        if name not in self._accuracy:
            self._accuracy[name] = MulticlassAccuracy(num_classes=self.module.num_classes, average="micro")
        if self._accuracy[name].device != self.module.device:
            self._accuracy[name] = self._accuracy[name].to(self.module.device)
        return self._accuracy[name]


class EvaluationHooks(Callback):
    """The validation hooks of :class:`~lightning_unlearn.InstanceUnlearning` during a request: the plugins' values are
    logged at the end of each validation epoch (``UnlearningModule`` logs ``{name}/acc`` and ``{name}/drop`` through
    the request's :class:`RequestEvaluator`), and all of them but the drops join the trace; passes over the
    evaluation sets are not counted in the request's samples.
    """

    _request: Request | None
    trace: list[dict[str, float]]
    _validated: dict[str, float] | None = None

    @override
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._request is not None:  # monitoring on the user's data is not the request's cost
            self._request.counter.pause()

    @override
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self._request is None:
            return
        self._validated = self._request.plugin_values()
        for name, value in self._validated.items():
            pl_module.log(name, value, batch_size=1)

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        request, plugins, self._validated = self._request, self._validated, None
        if request is None:
            return
        request.counter.resume()
        if plugins is not None:  # after the module's epoch end: this validation's accuracies
            point = {"request": float(request.summary.request), "step": float(request.steps), **plugins}
            validated = request.evaluator.last_validation
            self.trace.append({**point, **{k: v for k, v in validated.items() if not k.endswith("/drop")}})
