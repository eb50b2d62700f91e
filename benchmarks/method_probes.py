"""The probes behind the method's defaults: a plain-torch unlearning loop with switchable parts, one run per call.

Prints one JSON line (test drop in points, steps, seconds). Each part is the package's own function (forget loss,
PGD anchors, shifted copies, the closed-form edit, PCGrad), so a probe differs from ``InstanceUnlearning`` only in
the part being varied. Models: ``bn`` (the demo's small CNN), ``nobn`` (``cnn_no_bn``), ``mlp``, ``lenet`` (MNIST-5k).
See docs/benchmarks.md, "What we tried", for the runs and their numbers, e.g.

    python benchmarks/method_probes.py '{"model_name": "bn", "k": 32, "seed": 0, "protect": ["aug"], "pcgrad": false}'
    python benchmarks/method_probes.py '{"model_name": "nobn", "protect": ["aug", "anchors"], "edit_first": true,
        "max_steps": 0}'
"""

from __future__ import annotations

import copy
import json
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from lightning_unlearn import PGDAnchors
from lightning_unlearn.datasets import load_digits_split, load_mnist5k_split
from lightning_unlearn.functional.edit import edit_last_layer
from lightning_unlearn.functional.evaluation import accuracy, predict
from lightning_unlearn.functional.losses import forget_loss, is_unlearned
from lightning_unlearn.functional.neighbours import shifted_copies
from lightning_unlearn.functional.projection import flat_gradient, linear_surrogate, project_conflicting
from lightning_unlearn.models import cnn_no_bn, lenet_bn, mlp, small_cnn
from lightning_unlearn.pretrain import cached_classifier, pretrained_digits_cnn

torch.set_num_threads(1)


_SPLITS = {}


def task(name):
    if name == "bn":
        split = _SPLITS.setdefault("digits", load_digits_split())
        return split, pretrained_digits_cnn()
    if name in ("nobn", "mlp", "bn64"):
        split = _SPLITS.setdefault("digits", load_digits_split())
        make = {"nobn": cnn_no_bn, "mlp": mlp, "bn64": lambda: small_cnn(width=64)}[name]
        return split, cached_classifier(f"probe_digits_{name}.pt", make, split.x_train, split.y_train, epochs=30)
    if name == "lenet":
        split = _SPLITS.setdefault("mnist", load_mnist5k_split())
        return split, cached_classifier("probe_mnist_lenet.pt", lenet_bn, split.x_train, split.y_train, epochs=10)
    raise ValueError(name)


def run(
    model_name="bn",
    k=32,
    seed=0,
    *,
    lr=1e-4,
    protect=("anchors",),
    weight=10.0,
    pcgrad=True,
    stall=100,
    max_steps=2000,
    retain_frac=0.0,
    anchor_kw=None,
    n_aug=20,
    margin=0.0,
    batch=256,
    loss_kind="margin",
    schedule="stall",
    opt="adam",
    trust=None,
    extra=None,
    target_steps=200,
    down=0.95,
    up=1.05,
    active_mean=False,
    edit_first=False,
    repair=0,
    finisher=False,
    edit_lam=1e-2,
    edit_m=0.1,
    keep_margin=0.0,
    keep_best=False,
    n_synth=200,
    synth_steps=200,
):
    split, model = task(model_name)
    orig_model = model
    model = copy.deepcopy(model).eval()
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(split.y_train), generator=g)
    fi, ri = perm[:k], perm[k:]
    x, y = split.x_train[fi], split.y_train[fi]
    xr, yr = split.x_train[ri], split.y_train[ri]
    test0 = accuracy(model, split.x_test, split.y_test)
    ret0 = accuracy(model, xr, yr)
    t0 = time.perf_counter()
    pools = []
    gen = torch.Generator().manual_seed(seed + 100)
    if "anchors" in protect:
        pool = PGDAnchors(backend="builtin", **(anchor_kw or {})).generate(model, x, y, 10, generator=gen)
        pools.append(pool.inputs)
    if "aug" in protect:
        pools.append(shifted_copies(x, n_aug, 1, gen))
    if "mixup" in protect:
        i = torch.randint(0, k, (k * n_aug,), generator=gen)
        j = torch.randint(0, k, (k * n_aug,), generator=gen)
        lam = torch.rand(k * n_aug, 1, 1, 1, generator=gen)
        pools.append(lam * x[i] + (1 - lam) * x[j])
    if "noise" in protect:
        pools.append(
            (x.repeat(n_aug, 1, 1, 1) + 0.3 * torch.randn((k * n_aug, *x.shape[1:]), generator=gen)).clamp(0, 1)
        )
    if "synth" in protect:  # model-inverted stand-ins (benchmarks/continual_probes.py)
        from continual_probes import synthesize

        pools.append(synthesize(model, n_synth, x.shape[1:], seed, synth_steps))
    if retain_frac > 0:
        n = max(1, round(retain_frac * len(ri)))
        pools.append(xr[:n])
    P = torch.cat(pools) if pools else None
    Pref = predict(model, P) if P is not None else None

    if edit_first:
        edit_last_layer(model, x, y, P, margin=edit_m, lam=edit_lam)
    setup = time.perf_counter() - t0
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.Adam(params, lr=lr) if opt == "adam" else torch.optim.SGD(params, lr=lr, momentum=0.9)
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    scale = 1.0
    best = k + 1
    best_step = 0
    steps = 0
    flips = 0
    prev = None
    remaining = k
    bg = torch.Generator().manual_seed(seed + 1)
    w = weight

    def proxy():
        with torch.no_grad():
            return float(
                F.kl_div(
                    F.log_softmax(predict(model, P), -1),
                    F.log_softmax(Pref, -1),
                    reduction="batchmean",
                    log_target=True,
                )
            )

    best_state, best_proxy = None, float("inf")
    if keep_best:
        best_state, best_proxy = copy.deepcopy(model.state_dict()), proxy()
    proxy0 = best_proxy
    while steps < max_steps:
        logits = model(x)
        lf = forget_loss(logits, y, None, kind=loss_kind, margin=keep_margin if edit_first else margin)
        if active_mean and remaining > 0:
            lf = lf * k / remaining
        if schedule == "rate":
            H = float(lf.detach()) * (remaining if active_mean else k)
            if steps == 0:
                H0 = H
            goal = H0 * max(0.0, 1 - (steps + 1) / target_steps)
            scale = max(scale * down, 1 / 1024) if goal < H else min(1.0, scale * up)
        if P is not None and w * scale > 0:
            idx = torch.randint(0, len(P), (min(batch, len(P)),), generator=bg)
            lp = (
                F.kl_div(
                    F.log_softmax(model(P[idx]), -1),
                    F.log_softmax(Pref[idx], -1),
                    reduction="batchmean",
                    log_target=True,
                )
                * w
                * scale
            )
        else:
            lp = None
        optim.zero_grad()
        if lp is not None and pcgrad and lf.requires_grad and float(lf.detach()) != 0:
            gf = flat_gradient(lf, params, retain_graph=True)
            gp = flat_gradient(lp, params)
            linear_surrogate(params, project_conflicting(gf, gp) + gp).backward()
        else:
            (lf + lp if lp is not None else lf).backward()
        if extra is not None:
            extra(model, params)
        optim.step()
        steps += 1
        un = is_unlearned(predict(model, x), y)
        remaining = int((~un).sum())
        if prev is not None:
            flips += int((un != prev).sum())
        prev = un
        if keep_best and remaining == 0:
            pv = proxy()
            if pv < best_proxy:
                best_proxy, best_state = pv, copy.deepcopy(model.state_dict())
        if remaining == 0 and steps >= repair and not keep_best:
            break
        if schedule == "stall":
            if remaining < best:
                best, best_step = remaining, steps
            elif stall and steps - best_step >= stall:
                scale, best_step = max(scale / 2, 1 / 1024), steps
    if keep_best:
        model.load_state_dict(best_state)
        remaining = int((~is_unlearned(predict(model, x), y)).sum())
    if finisher and remaining > 0:
        edit_last_layer(model, x, y, P, margin=edit_m, lam=edit_lam)
        remaining = int((~is_unlearned(predict(model, x), y)).sum())
    secs = time.perf_counter() - t0

    fresh = shifted_copies(x, 20, 1, torch.Generator().manual_seed(seed + 999))
    model.eval()
    with torch.no_grad():
        ref = predict(orig_model, fresh)
        cur = predict(model, fresh)
        eval_proxy = float(
            F.kl_div(F.log_softmax(cur, -1), F.log_softmax(ref, -1), reduction="batchmean", log_target=True)
        )
        agree = float((cur.argmax(1) == ref.argmax(1)).float().mean())
    test1 = accuracy(model, split.x_test, split.y_test)
    ret1 = accuracy(model, xr, yr)
    return dict(
        model=model_name,
        k=k,
        seed=seed,
        unlearned=remaining == 0,
        remaining=remaining,
        steps=steps,
        flips=flips,
        test0=test0,
        test=test1,
        drop=100 * (test0 - test1),
        rdrop=100 * (ret0 - ret1),
        secs=round(secs, 1),
        setup=round(setup, 2),
        eval_proxy=eval_proxy,
        agree=agree,
        proxy0=proxy0 if keep_best else None,
        proxy=best_proxy if keep_best else None,
    )


if __name__ == "__main__":
    kw = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    print(json.dumps(run(**kw)))
