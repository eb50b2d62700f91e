"""The probes behind the continual-unlearning findings: a plain-torch sequence of requests with switchable guards.

Each request runs the package's default parts in a plain loop (bounded margin forget loss, PGD anchors and shifted
copies held at the outputs of the model at the request's start by KL, weight 10, stall-rule halving, Adam 1e-4, the
closed-form last-layer edit when the budget runs out). After each request it counts the instances of earlier
requests classified correctly again (``relearned``) and their median logit margin past the boundary (``margins``).
Prints one JSON line. See docs/benchmarks.md, "Continual: what we tried", for the runs, e.g.

    python benchmarks/continual_probes.py '{}'                       # baseline: 3 requests of 16, digits CNN, seed 0
    python benchmarks/continual_probes.py '{"margin": 1.0}'          # each request ends 1 logit past the boundary
    python benchmarks/continual_probes.py '{"freeze": 0.1}'          # freeze the 10 % of weights moved most so far
    python benchmarks/continual_probes.py '{"moved_penalty": 1e4}'   # penalise moving weights earlier requests moved
    python benchmarks/continual_probes.py '{"retain": 70}'           # 70 retained digits held at the current model
    python benchmarks/continual_probes.py '{"fragility": true}'      # weight noise / partial reversal after request 1

Other keys: ``lr``, ``warmup`` (linear learning-rate warm-up over that many steps), ``deepen`` (last-layer edit to
this margin after every request), ``noise`` (forget under random weight noise of this size relative to each tensor's
std), ``rho`` (sharpness-aware forgetting against the re-learning direction), ``synth`` (that many model-inverted inputs
held as well), ``moved_mask`` (gradients scaled by one minus the normalised movement of earlier requests), ``wide``
(the shifted copies forgotten too, not held), ``keep_optimizer`` (one Adam state over the sequence), ``order``,
``requests``, ``k``, ``seed``, ``trace`` (every that many steps: earlier instances remembered, test accuracy),
``model`` (``bn``, ``nobn``, ``mlp``, ``lenet``).

Issue 22 (the pre-trained weights theta_pre kept as a reference, never data):

    python benchmarks/continual_probes.py '{"requests": 5, "ref": "pre"}'   # hold theta_pre's outputs, not the start's
    python benchmarks/continual_probes.py '{"requests": 1, "k": 80}'        # one request of the same 80 (the union)

``ref`` (``"pre"``: every request holds the pre-trained model's outputs on its anchors and copies; ``"flipped"``: the
pre-trained outputs only on pool inputs whose class the current model changed, the current outputs elsewhere),
``repair`` (that many steps after each request toward theta_pre's outputs on its stand-ins, this request's instances
kept ``repair_margin`` logits past the boundary; ``repair_lr``, ``repair_weight``), ``pull`` (L2 pull of each weight
tensor toward theta_pre, relative to its variance), ``guard_delta`` (drop the gradient component that moves back along
theta - theta_pre), ``pre_synth`` (that many inputs inverted from theta_pre, once per sequence, added to every pool),
``keep`` (earlier requests' instances kept and held unlearned, like ``keep_forget_data=True``), ``dents`` (that many
inputs where the current model disagrees most with theta_pre, made at each request's start and held at the current
model; their smallest L2 distance to a deleted input is printed as ``dent_distance``).
"""

from __future__ import annotations

import copy
import json
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from lightning_unlearn import PGDAnchors
from lightning_unlearn.functional.edit import edit_last_layer
from lightning_unlearn.functional.evaluation import accuracy, predict
from lightning_unlearn.functional.losses import anchor_loss, forget_loss
from lightning_unlearn.functional.metrics import is_unlearned
from lightning_unlearn.functional.neighbours import shifted_copies

torch.set_num_threads(1)


def margins(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """How far past the decision boundary each instance is, in logits (best other class minus the label's)."""
    logits = predict(model, x)
    return logits.clone().scatter_(1, y[:, None], float("-inf")).max(1).values - logits.gather(1, y[:, None])[:, 0]


def remembered(model: nn.Module, x: Tensor, y: Tensor, margin: float = 0.0) -> int:
    """Instances not at least ``margin`` logits past the decision boundary."""
    if margin:
        return int((margins(model, x, y) < margin).sum())
    return int((~is_unlearned(predict(model, x), y)).sum())


def median_margin(model: nn.Module, x: Tensor, y: Tensor) -> float:
    return round(float(margins(model, x, y).median()), 2)


def synthesize(model: nn.Module, n: int, shape: torch.Size, seed: int, steps: int = 200) -> Tensor:
    """Model-inverted inputs (DeepInversion-style): noise optimised toward random classes, BatchNorm statistics matched,
    total variation small. Needs nothing but the model."""
    g = torch.Generator().manual_seed(seed + 55)
    z = torch.rand((n, *shape), generator=g).requires_grad_(True)
    target = torch.randint(0, 10, (n,), generator=g)
    stats: list[Tensor] = []

    def hook(m: nn.Module, inputs: tuple[Tensor, ...], _: Tensor) -> None:
        a, dims = inputs[0], [0, *range(2, inputs[0].dim())]
        stats.append(((a.mean(dims) - m.running_mean) ** 2).sum() + ((a.var(dims) - m.running_var) ** 2).sum())

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    handles = [m.register_forward_hook(hook) for m in bns]
    optimizer = torch.optim.Adam([z], lr=0.05)
    model.eval()
    for _ in range(steps):
        stats.clear()
        tv = (z[..., 1:, :] - z[..., :-1, :]).abs().mean() + (z[..., :, 1:] - z[..., :, :-1]).abs().mean()
        loss = F.cross_entropy(model(z.clamp(0, 1)), target) + sum(stats, torch.tensor(0.0)) + 0.1 * tv
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for handle in handles:
        handle.remove()
    return z.detach().clamp(0, 1)


def relearn_direction(model: nn.Module, params: dict[str, nn.Parameter], x: Tensor, y: Tensor) -> list[Tensor]:
    """The unit direction in weight space that re-learns ``(x, y)`` fastest (normalised cross-entropy gradient)."""
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(params.values()))
    norm = torch.sqrt(sum((g**2).sum() for g in grads)) + 1e-12
    return [g / norm for g in grads]


def repair(
    model: nn.Module, pre: nn.Module, x: Tensor, y: Tensor, pool: Tensor, seed: int, cfg: dict[str, Any]
) -> None:
    """After a request: ``cfg["repair"]`` steps toward the PRE-TRAINED model's outputs on the request's stand-ins (its
    anchors and copies), with a hinge that keeps this request's instances ``repair_margin`` logits past the boundary;
    the last-layer edit finishes any instance the repair brought back."""
    target = predict(pre, pool)
    params = dict(model.named_parameters())
    optimizer = torch.optim.Adam(params.values(), lr=cfg.get("repair_lr", 1e-4))
    batches = torch.Generator().manual_seed(seed + 3)
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    for _ in range(cfg["repair"]):
        idx = torch.randint(0, len(pool), (256,), generator=batches)
        loss = forget_loss(model(x), y, None, kind="margin", margin=cfg.get("repair_margin", 0.5))
        loss = loss + cfg.get("repair_weight", 1.0) * anchor_loss(model(pool[idx]), target[idx], kind="kl")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    if remembered(model, x, y):
        edit_last_layer(model, x, y, pool, margin=0.1, lam=1e-3)


def dent_inputs(
    model: nn.Module, pre: nn.Module, n: int, shape: torch.Size, seed: int, carried: dict[str, Any], steps: int = 100
) -> Tensor:
    """Inputs where the current model disagrees most with the pre-trained one (KL ascent from random inputs in the
    data's range): data-free stand-ins of the regions earlier requests changed. Made from the two models only, at the
    request's start, and dropped at its end; their distance to the deleted inputs is recorded to check the contract."""
    g = torch.Generator().manual_seed(seed + 77)
    z = torch.rand((n, *shape), generator=g).requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=0.05)
    model.eval()
    for _ in range(steps):
        inputs = z.clamp(0, 1)
        loss = -F.kl_div(F.log_softmax(model(inputs), 1), F.softmax(pre(inputs), 1), reduction="batchmean")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    out = z.detach().clamp(0, 1)
    deleted = torch.cat([xe for xe, _ in carried["earlier"]]).flatten(1)
    carried.setdefault("dent_distance", []).append(round(float(torch.cdist(out.flatten(1), deleted).min()), 2))
    return out


def request(
    model: nn.Module, x: Tensor, y: Tensor, seed: int, cfg: dict[str, Any], carried: dict[str, Any]
) -> tuple[int, int]:
    """One request in place; returns (steps, instances the edit had to finish)."""
    gen = torch.Generator().manual_seed(seed)
    pools = [
        PGDAnchors(backend="builtin").generate(model, x, y, 10, generator=gen).inputs,
        shifted_copies(x, 20, 1, gen),
    ]
    if cfg.get("wide"):  # the shifted copies are forgotten with their instance instead of held: a wider dent
        wide_x, wide_y = pools.pop(), y.repeat_interleave(20)
    if cfg.get("retain"):
        pools.append(carried["retain"][: cfg["retain"]])
    if cfg.get("synth"):
        pools.append(synthesize(model, cfg["synth"], x.shape[1:], seed))
    if cfg.get("pre_synth"):  # model-inverted inputs of the PRE-TRAINED model, made once per sequence
        pools.append(carried["pre_synth"])
    pool = torch.cat(pools)
    if cfg.get("keep") and carried.get("earlier"):  # keep_forget_data: earlier instances forgotten and checked too
        x = torch.cat([x, *(xe for xe, _ in carried["earlier"])])
        y = torch.cat([y, *(ye for _, ye in carried["earlier"])])
    pre = carried.get("pre", model)
    # the outputs every request holds: the pre-trained model's (``ref: pre``) or the model's at the request's start
    reference = predict(pre if cfg.get("ref") == "pre" else model, pool)
    if cfg.get("ref") == "flipped":  # theta_pre's outputs only where its class differs from the current model's
        from_pre = predict(pre, pool)
        flipped = from_pre.argmax(1) != reference.argmax(1)
        reference = torch.where(flipped[:, None], from_pre, reference)
        carried.setdefault("flipped", []).append(int(flipped.sum()))
    if cfg.get("dents") and carried.get("earlier"):  # data-free stand-ins of earlier dents, held at the CURRENT model
        dent_x = dent_inputs(model, pre, cfg["dents"], x.shape[1:], seed, carried)
        pool = torch.cat([pool, dent_x])
        reference = torch.cat([reference, predict(model, dent_x)])
    params = dict(model.named_parameters())
    start = {n: p.detach().clone() for n, p in params.items()}
    spread = {n: p.detach().std() if p.numel() > 1 else p.detach().abs() for n, p in params.items()}
    pre_params = dict(pre.named_parameters())
    drift = {n: (p.detach() - pre_params[n].detach()) for n, p in params.items()} if carried.get("earlier") else None
    drift_sq = sum((d**2).sum() for d in drift.values()) + 1e-12 if drift is not None else None
    optimizer = carried.get("optimizer") or torch.optim.Adam(params.values(), lr=cfg.get("lr", 1e-4))
    if cfg.get("keep_optimizer"):  # Adam's moments carried from request to request
        carried["optimizer"] = optimizer
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    margin, rho, sigma = cfg.get("margin", 0.0), cfg.get("rho", 0.0), cfg.get("noise", 0.0)
    noise_gen = torch.Generator().manual_seed(seed + 7)
    checks = [
        {n: sigma * spread[n] * torch.randn(p.shape, generator=noise_gen) for n, p in params.items()} for _ in range(4)
    ]
    scale, best, best_step, steps = 1.0, len(y) + 1, 0, 0
    batches = torch.Generator().manual_seed(seed + 1)
    lr = cfg.get("lr", 1e-4)
    while steps < cfg.get("max_steps", 1000):
        if cfg.get("warmup"):  # learning rate ramped up linearly over the first `warmup` steps
            for group in optimizer.param_groups:
                group["lr"] = lr * min(1.0, (steps + 1) / cfg["warmup"])
        loss = forget_loss(model(x), y, None, kind="margin", margin=margin)
        if cfg.get("wide"):
            loss = loss + forget_loss(model(wide_x), wide_y, None, kind="margin")
        if sigma:  # forget under random weight noise too
            draw = torch.Generator().manual_seed(steps)
            for _ in range(2):
                noisy = {n: p + sigma * spread[n] * torch.randn(p.shape, generator=draw) for n, p in params.items()}
                loss = loss + forget_loss(functional_call(model, noisy, (x,)), y, None, kind="margin") / 2
        if rho:  # the forget loss taken after a re-learning step of size rho (SAM-style)
            direction = relearn_direction(model, params, x, y)
            with torch.no_grad():
                for p, d in zip(params.values(), direction):
                    p.sub_(rho * d)
            loss = forget_loss(model(x), y, None, kind="margin", margin=margin)
            robust = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            with torch.no_grad():
                for p, d in zip(params.values(), direction):
                    p.add_(rho * d)
            loss = loss.detach() * 0
        idx = torch.randint(0, len(pool), (256,), generator=batches)
        loss = loss + 10 * scale * anchor_loss(model(pool[idx]), reference[idx], kind="kl")
        if cfg.get("pull"):  # L2 pull of the weights toward the pre-trained ones, per tensor relative to its variance
            loss = loss + cfg["pull"] * sum(
                ((p - pre_params[n]) ** 2).mean() / pre_params[n].var().clamp_min(1e-12)
                for n, p in params.items()
                if pre_params[n].numel() > 1
            )
        if cfg.get("moved_penalty") and "moved" in carried:
            loss = loss + cfg["moved_penalty"] * sum(
                (carried["moved"][n] * (p - start[n]) ** 2).sum() for n, p in params.items()
            )
        optimizer.zero_grad()
        loss.backward()
        if rho:
            for p, g in zip(params.values(), robust):
                if g is not None:
                    p.grad.add_(g)
        if cfg.get("moved_mask") and "moved" in carried:  # gradients scaled by how little earlier requests moved
            for n, p in params.items():
                p.grad.mul_((1 - carried["moved"][n]).clamp_min(0))
        if cfg.get("freeze") and "frozen" in carried:
            for n, p in params.items():
                p.grad.mul_(carried["frozen"][n])
        if cfg.get("guard_delta") and drift is not None:  # no gradient step back along theta - theta_pre
            dot = sum((p.grad * drift[n]).sum() for n, p in params.items())
            if dot > 0:
                for n, p in params.items():
                    p.grad.sub_(dot / drift_sq * drift[n])
        optimizer.step()
        steps += 1
        if cfg.get("trace") and steps % cfg["trace"] == 0 and carried.get("earlier"):
            split = carried["split"]
            carried.setdefault("trace", []).append([
                len(carried["earlier"]), steps, sum(remembered(model, xe, ye) for xe, ye in carried["earlier"]),
                round(100 * accuracy(model, split.x_test, split.y_test), 1),
            ])  # fmt: skip
        left = remembered(model, x, y, margin)
        if left == 0 and sigma:
            with torch.no_grad():
                left = sum(
                    int(
                        (~is_unlearned(functional_call(model, {n: p + e[n] for n, p in params.items()}, (x,)), y)).sum()
                    )
                    for e in checks
                )
        if left == 0 and rho:
            direction = relearn_direction(model, params, x, y)
            with torch.no_grad():
                for p, d in zip(params.values(), direction):
                    p.sub_(rho * d)
                left = remembered(model, x, y)
                for p, d in zip(params.values(), direction):
                    p.add_(rho * d)
        if left == 0:
            break
        if left < best:
            best, best_step = left, steps
        elif steps - best_step >= 100:
            scale, best_step = max(scale / 2, 1 / 1024), steps
    model.eval()
    left = remembered(model, x, y)
    if left or cfg.get("deepen"):
        edit_last_layer(model, x, y, pool, margin=cfg.get("deepen", 0.1), lam=1e-3)
    if cfg.get("repair"):
        repair(model, pre, x, y, pool, seed, cfg)
    moved = {n: (p.detach() - start[n]).abs() for n, p in model.named_parameters()}
    if cfg.get("moved_penalty") or cfg.get(
        "moved_mask"
    ):  # where earlier requests moved the weights, normalised per tensor, max over requests
        norm = {n: v / v.max().clamp_min(1e-12) for n, v in moved.items()}
        carried["moved"] = (
            {n: torch.maximum(carried["moved"][n], v) for n, v in norm.items()} if "moved" in carried else norm
        )
    if cfg.get("freeze"):  # freeze the top `freeze` share of weights by how far this request moved them
        flat = torch.cat([v.flatten() for v in moved.values()])
        threshold = torch.quantile(
            flat[torch.randperm(len(flat), generator=torch.Generator().manual_seed(0))[:100_000]], 1 - cfg["freeze"]
        )
        keep = {n: (v < threshold).float() for n, v in moved.items()}
        carried["frozen"] = {n: carried["frozen"][n] * v for n, v in keep.items()} if "frozen" in carried else keep
    return steps, left


def fragility(model: nn.Module, split: Any, x: Tensor, y: Tensor, seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    """After one request: how many of its instances random weight noise (relative to the request's own weight change)
    or a partial reversal of that change brings back."""
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    request(model, x, y, seed, cfg, {})
    after = copy.deepcopy(model.state_dict())
    delta = {n: p.detach() - start[n] for n, p in model.named_parameters()}
    out: dict[str, Any] = {"noise": {}, "revert": {}}
    for size in (0.25, 0.5, 1.0):
        rows = []
        for draw in range(5):
            g = torch.Generator().manual_seed(draw)
            model.load_state_dict(after)
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.add_(size * delta[n].std() * torch.randn(p.shape, generator=g))
            rows.append([remembered(model, x, y), round(100 * accuracy(model, split.x_test, split.y_test), 1)])
        out["noise"][size] = rows
    for share in (0.1, 0.25, 0.5):
        model.load_state_dict(after)
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.sub_(share * delta[n])
        out["revert"][share] = [remembered(model, x, y), round(100 * accuracy(model, split.x_test, split.y_test), 1)]
    return out


def main(cfg: dict[str, Any]) -> None:
    from method_probes import task  # the probe models (cached pre-training)

    split, base = task(cfg.get("model", "bn"))
    model = copy.deepcopy(base).eval()
    seed, k, count = cfg.get("seed", 0), cfg.get("k", 16), cfg.get("requests", 3)
    order = torch.randperm(len(split.y_train), generator=torch.Generator().manual_seed(seed))
    requests = [
        (split.x_train[order[i * k : (i + 1) * k]], split.y_train[order[i * k : (i + 1) * k]]) for i in range(count)
    ]
    requests = [requests[i] for i in cfg.get("order", range(count))]
    pretrained = accuracy(model, split.x_test, split.y_test)
    if cfg.get("fragility"):
        x, y = requests[0]
        print(
            json.dumps(
                {"cfg": cfg, "pretrained": round(100 * pretrained, 2), **fragility(model, split, x, y, seed * 100, cfg)}
            )
        )
        return
    carried: dict[str, Any] = {"retain": split.x_train[order[count * k :]], "pre": copy.deepcopy(base).eval()}
    for p in carried["pre"].parameters():
        p.requires_grad_(False)
    if cfg.get("pre_synth"):
        carried["pre_synth"] = synthesize(carried["pre"], cfg["pre_synth"], split.x_train.shape[1:], seed)
    rows = []
    for r, (x, y) in enumerate(requests):
        started = time.perf_counter()
        carried.update(earlier=requests[:r], split=split)
        steps, edited = request(model, x, y, seed * 100 + r, cfg, carried)
        rows.append({
            "r": r + 1, "steps": steps, "edited": edited,
            "relearned": [remembered(model, xe, ye) for xe, ye in requests[:r]],
            "margins": [median_margin(model, xe, ye) for xe, ye in requests[: r + 1]],
            "test": round(100 * accuracy(model, split.x_test, split.y_test), 2),
            "secs": round(time.perf_counter() - started, 1),
        })  # fmt: skip
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    trace = {key: carried[key] for key in ("trace", "dent_distance", "flipped") if key in carried}
    print(json.dumps({"cfg": cfg, "pretrained": round(100 * pretrained, 2), "rows": rows, **trace}), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {})
