"""A torchvision ResNet-18 on CIFAR-10, from a local folder (no download).

CIFAR-10 is read with ``torchvision.datasets.CIFAR10(root=--data-dir, download=False)``: put the extracted
``cifar-10-batches-py`` folder there first. Without it the script prints a message and exits with status 0 (so CI can
run it anywhere). The classifier is ``lightning_unlearn.models.NormalizedResNet18``: torchvision's
``resnet18(num_classes=10)`` with the input normalisation *inside* the model, so the data stays in ``[0, 1]`` and
``PGDAnchors(input_range=(0, 1))`` (the default) matches it. It is also the model of the shipped ``cifar10_resnet18``
config, so the weights this script saves run there: ``lightning-unlearn fit --config cifar10.yaml --model.checkpoint
<--out>/resnet18_cifar10.pt``.

Weights come from ``--checkpoint`` (a state dict or Lightning checkpoint of this architecture), else the script trains
the model for ``--pretrain-epochs`` and saves it to ``<--out>/resnet18_cifar10.pt`` so the next run reuses it. Then it
forgets ``k`` training instances, evaluating on a random subset of the remaining training data and on the test set.
A GPU makes this minutes; on a CPU use ``--smoke``.

L2 anchor radius: the default ``PGDAnchors(eps=None)`` scales the radii chosen on 8x8 digits to 32x32 images (2, 4
and 8; see the FAQ's "eps for different input sizes"), as the shipped config does.

    python examples/04_cifar10_resnet18.py --data-dir data/cifar10
    python examples/04_cifar10_resnet18.py --data-dir data/cifar10 --checkpoint resnet18_cifar10.pt --k 64
    python examples/04_cifar10_resnet18.py --data-dir data/cifar10 --smoke     # tiny sizes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

# torch, torchvision, Lightning and lightning_unlearn are imported after the data check, so that the script exits at
# once when the folder is absent.


def build_classifier() -> nn.Module:
    """ResNet-18 for 10 classes, with the per-channel normalisation as its first layer (inputs stay in [0, 1]): the
    shipped ``cifar10_resnet18`` config's ``model.classifier``.
    """
    from lightning_unlearn.models import NormalizedResNet18

    return NormalizedResNet18(num_classes=10)


def pretrain(
    model: nn.Module, data: torch.utils.data.Dataset, epochs: int, device: torch.device, workers: int = 2
) -> nn.Module:
    """A plain supervised loop (SGD, one-cycle schedule, horizontal flips): the model unlearning starts from."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    model.to(device).train()
    loader = DataLoader(data, batch_size=256, shuffle=True, num_workers=workers, drop_last=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.1, total_steps=max(1, epochs * len(loader)))
    for epoch in range(epochs):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            x = torch.where(torch.rand(x.shape[0], 1, 1, 1, device=device) < 0.5, x.flip(3), x)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        print(f"pre-training epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}")
    return model.eval().cpu()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("data/cifar10"), help="holds cifar-10-batches-py")
    parser.add_argument("--checkpoint", type=Path, default=None, help="trained weights of this architecture")
    parser.add_argument("--pretrain-epochs", type=int, default=15, help="when no checkpoint is given or cached")
    parser.add_argument("--k", type=int, default=32, help="number of training instances to forget")
    parser.add_argument("--eval-size", type=int, default=5000, help="retain and test instances evaluated")
    parser.add_argument("--out", type=Path, default=Path("unlearn_output/cifar10_resnet18"))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: a few training images, a few steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (args.data_dir / "cifar-10-batches-py").is_dir():
        print(
            f"CIFAR-10 not found under {args.data_dir} (expected {args.data_dir / 'cifar-10-batches-py'});"
            " nothing to do. Download and extract it there (this script never downloads)."
        )
        return 0
    return unlearn(args)


def unlearn(args: argparse.Namespace) -> int:
    import lightning as L
    import torch
    import torchvision
    from torch.utils.data import DataLoader, Subset
    from torchvision.transforms import ToTensor

    from lightning_unlearn import ForgetSet, InstanceUnlearning, PGDAnchors, UnlearningModule
    from lightning_unlearn.loading import load_classifier

    if args.smoke:
        torch.set_num_threads(1)
        args.k, args.eval_size, args.pretrain_epochs = 4, 256, 1
    train = torchvision.datasets.CIFAR10(str(args.data_dir), train=True, download=False, transform=ToTensor())
    test = torchvision.datasets.CIFAR10(str(args.data_dir), train=False, download=False, transform=ToTensor())
    L.seed_everything(args.seed, verbose=False)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    cached = args.out / "resnet18_cifar10.pt"
    if args.checkpoint is not None:
        classifier = load_classifier(args.checkpoint, factory=build_classifier)
    elif cached.is_file() and not args.smoke:
        classifier = load_classifier(cached, factory=build_classifier)
    else:
        data = Subset(train, range(512)) if args.smoke else train
        classifier = pretrain(build_classifier(), data, args.pretrain_epochs, device, workers=0 if args.smoke else 2)
        if not args.smoke:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.save(classifier.state_dict(), cached)

    generator = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(train), generator=generator)
    forget = ForgetSet.from_dataset(train, order[: args.k])
    retain = Subset(train, order[args.k : args.k + args.eval_size].tolist())
    test_subset = Subset(test, torch.randperm(len(test), generator=generator)[: args.eval_size].tolist())
    evaluation = {"retain": DataLoader(retain, batch_size=500), "test": DataLoader(test_subset, batch_size=500)}

    if args.smoke:
        anchors = PGDAnchors(eps=1.0, per_instance=2, steps=2)
        callback = InstanceUnlearning(anchors=anchors, max_steps=20, restore_on_failure=False, seed=args.seed)
    else:  # the package defaults, as in the shipped cifar10_resnet18.yaml
        callback = InstanceUnlearning(receipt_dir=args.out / "receipts", seed=args.seed)
    trainer = L.Trainer(
        max_epochs=-1,
        accelerator="auto",
        devices=1,
        precision="bf16-mixed" if device.type == "cuda" else "32-true",
        callbacks=[callback],
        default_root_dir=args.out,
        enable_checkpointing=False,
        enable_progress_bar=not args.smoke,
        check_val_every_n_epoch=50,
    )
    trainer.fit(
        UnlearningModule(classifier, num_classes=10),
        DataLoader(forget, batch_size=len(forget)),
        val_dataloaders=evaluation,
    )
    summary = callback.summary
    assert summary is not None
    for name in ("forget/acc", "retain/acc", "test/acc", "mia/efficacy", "anchor/agreement"):
        print(f"{name}: {summary.before.get(name, float('nan')):.3f} -> {summary.after.get(name, float('nan')):.3f}")
    print(f"unlearned: {summary.unlearned} ({summary.k} instances, {summary.steps} steps, {summary.seconds:.1f}s)")
    if trainer.is_global_zero:
        callback.save_summary(args.out / "summary.json")
        torch.save(classifier.state_dict(), args.out / "resnet18_cifar10_unlearned.pt")
        print(f"summary and unlearned weights written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
