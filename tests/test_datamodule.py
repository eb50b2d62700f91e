"""ForgetRequestDataModule's retained sample: drawn outside the forget set, seeded and capped, read in shards under DDP,
picked up by InstanceUnlearning, recorded in receipts by its size only, absent from checkpoints; off with a flag.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_unlearn import InstanceUnlearning, UnlearningModule
from lightning_unlearn.datamodule import ForgetRequestDataModule, sample_retained_indices
from lightning_unlearn.datasets import DigitsDataset
from lightning_unlearn.plugins.distill import RetainDistillation, retained_inputs
from lightning_unlearn.receipts import instance_hash, read_receipt
from tests.conftest import forget_indices, quiet_trainer_kwargs

torch.set_num_threads(1)

FORGET = forget_indices(1437, 8).tolist()  # 8 of the 1,437 digits training images


@pytest.fixture(scope="module")
def train() -> DigitsDataset:
    return DigitsDataset("train")


def test_the_retained_sample_never_holds_a_forget_index_and_is_seeded_and_capped(train: DigitsDataset) -> None:
    dm = ForgetRequestDataModule(train, forget_indices=FORGET)
    sample = dm.retain_indices
    assert len(sample) == round(0.05 * (1437 - 8)) == 71  # the default: 5 % of the rest
    assert not set(sample) & set(FORGET) and sample == sorted(set(sample)) and min(sample) >= 0 and max(sample) < 1437
    assert ForgetRequestDataModule(train, forget_indices=FORGET).retain_indices == sample  # same on every process
    assert ForgetRequestDataModule(train, forget_indices=FORGET, retain_seed=1).retain_indices != sample
    capped = ForgetRequestDataModule(train, forget_indices=FORGET, retain_fraction=1.0, retain_max_samples=100)
    assert len(capped.retain_indices) == 100 and not set(capped.retain_indices) & set(FORGET)
    everything = sample_retained_indices(1437, FORGET, fraction=1.0, max_samples=None)
    assert everything == [i for i in range(1437) if i not in set(FORGET)]
    # inputs only: the items are the training images at those positions, without their labels
    inputs = dm.retain_sample()
    assert inputs is not None and len(inputs) == 71
    assert isinstance(inputs[0], Tensor) and torch.equal(inputs[3], train[sample[3]][0])


def test_retain_fraction_0_turns_the_sample_off_and_bad_values_name_the_argument(train: DigitsDataset) -> None:
    off = ForgetRequestDataModule(train, forget_indices=FORGET, retain_fraction=0.0)
    assert off.retain_indices == [] and off.retain_sample() is None
    with pytest.raises(ValueError, match=re.escape("`retain_fraction` must be in [0, 1], got 1.5.")):
        ForgetRequestDataModule(train, forget_indices=FORGET, retain_fraction=1.5)
    with pytest.raises(ValueError, match=re.escape("`retain_max_samples` must be > 0 or None, got 0.")):
        ForgetRequestDataModule(train, forget_indices=FORGET, retain_max_samples=0)


def test_each_process_reads_a_disjoint_share_and_the_shares_cover_the_sample(train: DigitsDataset) -> None:
    dm = ForgetRequestDataModule(train, forget_indices=FORGET)
    sample = dm.retain_sample()
    assert sample is not None
    whole = retained_inputs(sample)
    assert whole.shape == (71, 1, 8, 8)
    for source in (sample, whole, DataLoader(sample, batch_size=16)):
        shards = [retained_inputs(source, rank, world_size=3) for rank in range(3)]
        assert [len(s) for s in shards] == [24, 24, 23]
        order = torch.cat(shards)  # every input once: rank r holds positions r, r + 3, ...
        assert torch.equal(order, torch.cat([whole[r::3] for r in range(3)]))
    few = retained_inputs(TensorDataset(whole[:2], torch.zeros(2)), rank=2, world_size=3)
    assert few.shape == (0, 1, 8, 8)  # more processes than inputs: an empty share shaped like the inputs
    with pytest.raises(ValueError, match=re.escape("`rank` must be in [0, world_size=2), got 2.")):
        retained_inputs(whole, rank=2, world_size=2)


class PoolProbe(Callback):
    """Listed after InstanceUnlearning: records each process's retained pool and saves a checkpoint mid-request."""

    def __init__(self, unlearning: InstanceUnlearning, out: Path) -> None:
        self.unlearning, self.out = unlearning, out

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        retain = self.unlearning.retain
        pool = None if retain is None else retain.inputs
        torch.save(pool, self.out / f"pool_rank{trainer.global_rank}.pt")

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == 1 and trainer.world_size == 1:
            trainer.save_checkpoint(self.out / "mid_request.ckpt")


def _fit(model: nn.Module, dm: ForgetRequestDataModule, out: Path, **trainer: Any) -> InstanceUnlearning:
    unlearning = InstanceUnlearning(
        fisher_edit=None, max_steps=3, seed=0, receipt_dir=out / "receipts", edit=None, shifted_copies=None
    )
    kwargs = {**quiet_trainer_kwargs(), "default_root_dir": out, "limit_val_batches": 0, **trainer}
    fitter = L.Trainer(max_epochs=-1, callbacks=[unlearning, PoolProbe(unlearning, out)], **kwargs)
    fitter.fit(UnlearningModule(model, num_classes=10), datamodule=dm)
    return unlearning


def _tensors(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def test_a_request_distils_on_the_sample_which_stays_out_of_checkpoints_and_receipts(
    train: DigitsDataset, digits_cnn: nn.Module, tmp_path: Path
) -> None:
    dm = ForgetRequestDataModule(train, forget_indices=FORGET, evaluate_retain=False)
    unlearning = _fit(digits_cnn, dm, tmp_path)
    assert isinstance(unlearning.retain, RetainDistillation) and unlearning.retain.size == 71
    pool = torch.load(tmp_path / "pool_rank0.pt", weights_only=True)
    assert torch.equal(pool, torch.stack([train[i][0] for i in dm.retain_indices]))
    checkpoint = torch.load(tmp_path / "mid_request.ckpt", weights_only=False)
    assert checkpoint["callbacks"] and _tensors(checkpoint["state_dict"])  # the request in progress is in it ...
    image_shaped = [t.shape for t in _tensors(checkpoint) if tuple(t.shape[-3:]) == (1, 8, 8)]
    assert image_shaped == []  # ... but no retained (nor forget) image
    (path,) = unlearning.receipts
    receipt = read_receipt(path)
    assert receipt.retained_sample == 71 and receipt.method["plugins"]["retain_distill"] == {
        "weight": 10.0,
        "batch_size": 64,
        "size": 71,
    }
    text = Path(path).read_text()
    retained_hashes = [instance_hash(*train[i]) for i in dm.retain_indices]
    assert receipt.k == 8 and not any(digest in text for digest in retained_hashes)


def test_retain_fraction_0_and_the_python_api_default_request_on_the_forget_set_only(
    train: DigitsDataset, digits_cnn: nn.Module, tmp_path: Path
) -> None:
    dm = ForgetRequestDataModule(train, forget_indices=FORGET, evaluate_retain=False, retain_fraction=0.0)
    unlearning = _fit(digits_cnn, dm, tmp_path)
    assert unlearning.retain is None and "retain_distill" not in [p.name for p in unlearning.plugins]
    receipt = read_receipt(unlearning.receipts[0])
    assert receipt.retained_sample == 0 and "retain_distill" not in receipt.method["plugins"]
    assert torch.load(tmp_path / "pool_rank0.pt", weights_only=True) is None
    assert InstanceUnlearning().retain is None  # without a DataModule: the forget set only, as in the paper


@pytest.mark.timeout(120)
def test_under_ddp_each_process_distils_on_its_own_share_of_the_sample(
    train: DigitsDataset, digits_cnn: nn.Module, tmp_path: Path
) -> None:
    dm = ForgetRequestDataModule(train, forget_indices=FORGET, evaluate_retain=False)
    # ddp_fork: ddp_spawn's launcher without the pickling (ddp_spawn passes too, in 40 s instead of 7)
    unlearning = _fit(digits_cnn, dm, tmp_path, devices=2, strategy="ddp_fork")
    shards = [torch.load(tmp_path / f"pool_rank{r}.pt", weights_only=True) for r in range(2)]
    sample = torch.stack([train[i][0] for i in dm.retain_indices])
    assert [len(s) for s in shards] == [36, 35]
    assert torch.equal(shards[0], sample[0::2]) and torch.equal(shards[1], sample[1::2])
    receipt = json.loads(Path(unlearning.receipts[0]).read_text())
    assert receipt["retained_sample"] == 71 and receipt["k"] == 8
