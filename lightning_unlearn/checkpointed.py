"""The model of ``lightning-unlearn fit``, and the check of its classifier against the request before the Trainer
starts.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from lightning_unlearn.datamodule import ForgetRequestDataModule
from lightning_unlearn.functional import eval_mode
from lightning_unlearn.loading import load_checkpoint_weights
from lightning_unlearn.module import UnlearningModule


class CheckpointedUnlearningModule(UnlearningModule):
    """The model of lightning-unlearn fit: an UnlearningModule with classifier weights loaded from a file.

    The file is a Lightning checkpoint, an UnlearningModule checkpoint or a plain state dict.

    Args:
        classifier: the architecture (class_path + init_args in YAML).
        num_classes: number of classes the classifier predicts.
        checkpoint: the trained weights: a path (~ expanded) or cache:NAME for NAME in the demo's cache folder
            ($LIGHTNING_UNLEARN_CACHE, else ~/.cache/lightning-unlearn); null keeps the classifier as built.
        **kwargs: the other arguments of UnlearningModule.

    Raises:
        FileNotFoundError: if ``checkpoint`` does not exist.
        ValueError: if its weights do not fit ``classifier`` (naming the first tensor that does not).

    Examples:
        >>> module = CheckpointedUnlearningModule(nn.Linear(4, 3), num_classes=3)
        >>> module.hparams["num_classes"], module.hparams["checkpoint"]
        (3, None)
    """

    def __init__(self, classifier: nn.Module, num_classes: int, checkpoint: str | None = None, **kwargs: Any) -> None:
        if checkpoint is not None:
            load_checkpoint_weights(classifier, checkpoint)
        super().__init__(classifier, num_classes, **kwargs)
        self.save_hyperparameters(ignore=["classifier"])


def check_request(model: UnlearningModule, datamodule: L.LightningDataModule | None) -> None:
    """Fail before the Trainer starts, naming the option to change, when the classifier's outputs for the first
    forget input do not number ``model.num_classes`` (the module checks the labels against it when the request starts).

    Only a :class:`~lightning_unlearn.datamodule.ForgetRequestDataModule` whose inputs are tensors is checked; a
    classifier that does not return ``[B, C]`` logits is left to the module's own check.

    Raises:
        ValueError: if the number of logits is not ``model.num_classes``.

    Examples:
        >>> from torch.utils.data import TensorDataset
        >>> data = ForgetRequestDataModule(TensorDataset(torch.rand(4, 2), torch.zeros(4).long()), [0])
        >>> check_request(UnlearningModule(nn.Linear(2, 3), num_classes=5), data)
        Traceback (most recent call last):
        ...
        ValueError: `model.num_classes` is 5 but the classifier returns 3 logits per instance; set `--model.num_classes 3` or change the classifier.
    """  # noqa: E501
    if not isinstance(datamodule, ForgetRequestDataModule) or not datamodule.forget_indices:
        return
    item = datamodule.dataset[datamodule.forget_indices[0]]
    x = item[0] if isinstance(item, (tuple, list)) else item
    if not isinstance(x, Tensor):
        return
    with torch.no_grad(), eval_mode(model.classifier):
        logits = model.classifier(x.unsqueeze(0))
    outputs = int(logits.shape[-1]) if isinstance(logits, Tensor) and logits.ndim == 2 else None
    if outputs is not None and outputs != model.num_classes:
        raise ValueError(
            f"`model.num_classes` is {model.num_classes} but the classifier returns {outputs} logits per instance;"
            f" set `--model.num_classes {outputs}` or change the classifier."
        )
