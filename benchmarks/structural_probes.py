"""Structural probes for issue 21: where a request's change lands, and how, on the classifiers the defaults suit least.

Prints one JSON line per call. Two loops over the package's own functions (forget loss, PGD anchors, shifted copies,
the closed-form last-layer edit):

- ``method="steps"``: today's defaults reproduced (margin forget loss; anchors and 20 shifted copies per instance, each
  held by KL at weight 10 with 256 inputs a step; Adam 1e-4; stall rule; 1,000 steps; the package's last-layer edit
  finisher, which edits both the reached and the original weights and keeps the gentler), with one structural switch
  at a time: ``train_last`` (only the last L linear/conv layers move), ``lr_decay`` (per-layer learning rate times
  ``lr_decay ** depth-from-head``), ``gpm`` (each step's weight change projected off the span of the protected inputs'
  activations at that layer, GPM-style, keeping ``gpm`` of their energy), ``keep_margin`` (hinge on every instance,
  including those already past, to that margin), ``hold_crossed`` (an instance's logits held by KL once it crossed).
- ``method="cgn"``: a constrained Gauss-Newton edit over the last ``train_last`` layers: each iteration takes the
  smallest change of those layers' weights, in the metric of the protected inputs (``metric``: ``"A"`` = each layer's
  protected input covariance, the last-layer edit's metric generalised to every layer; ``"kfac"`` = its K-FAC Fisher
  ``A x S`` on the protected inputs; ``"gpm"`` = a hard projection off their top-energy subspace; ``"I"`` = plain
  parameter norm), that moves each remembered instance's margin ``target`` past the boundary to first order and keeps
  the crossed ones where they are; a few iterations, no optimiser. Cost: ``k`` per-sample gradients per iteration.

Samples are counted as inputs pushed through the classifier (a forward, or a forward and a backward), PGD included:
``setup_samples`` (anchors, reference outputs, covariances) + ``step_samples``. ``flips``: instance crossings summed
over steps (the flicker). Examples (one thread, seconds per run on digits):

    python benchmarks/structural_probes.py '{"model_name": "nobn", "k": 32, "seed": 0}'
    python benchmarks/structural_probes.py '{"model_name": "mlp", "method": "cgn", "train_last": 3, "metric": "kfac"}'
"""

from __future__ import annotations

import copy
import json
import sys
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from method_probes import task

from lightning_unlearn import PGDAnchors
from lightning_unlearn.functional.edit import edit_last_layer, last_linear
from lightning_unlearn.functional.evaluation import accuracy, predict
from lightning_unlearn.functional.losses import forget_loss, is_unlearned
from lightning_unlearn.functional.neighbours import shifted_copies

torch.set_num_threads(1)


def kl(logits: Tensor, ref: Tensor) -> Tensor:
    return F.kl_div(F.log_softmax(logits, -1), F.log_softmax(ref, -1), reduction="batchmean", log_target=True)


def layers_of(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def margins(logits: Tensor, y: Tensor) -> Tensor:
    """z_label - max other: > 0 while the instance is remembered."""
    own = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).max(1).values
    return own - other


def layer_rows(layer: nn.Module, inp: Tensor) -> Tensor:
    """The rows a layer's weight (flattened to [out, d], bias as the last column) multiplies."""
    if isinstance(layer, nn.Conv2d):
        cols = F.unfold(inp, layer.kernel_size, layer.dilation, layer.padding, layer.stride)  # [n, d, L]
        rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    else:
        rows = inp.flatten(1)
    if layer.bias is not None:
        rows = torch.cat([rows, torch.ones_like(rows[:, :1])], 1)
    return rows


@torch.no_grad()
def input_covariances(model: nn.Module, layers: list[nn.Module], inputs: Tensor) -> list[Tensor]:
    """Per layer, the (uncentred) covariance of its input rows on ``inputs``, in float64, eval mode."""
    sums: list[Tensor | None] = [None] * len(layers)
    counts = [0] * len(layers)

    def hook(i):
        def fn(mod, args, out):
            r = layer_rows(mod, args[0].detach()).double()
            s = r.T @ r
            sums[i] = s if sums[i] is None else sums[i] + s
            counts[i] += r.shape[0]

        return fn

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    was = model.training
    model.eval()
    for chunk in inputs.split(1024):
        model(chunk)
    model.train(was)
    for h in handles:
        h.remove()
    return [s / c for s, c in zip(sums, counts)]


def output_fisher(model: nn.Module, layers: list[nn.Module], inputs: Tensor, seed: int) -> list[Tensor]:
    """Per layer, K-FAC's output-side factor: E[g g^T] of the gradient at the layer's output (per position for convs),
    with labels sampled from the model's own softmax on ``inputs`` (the true Fisher), eval mode."""
    outs: list[Tensor] = []

    def keep(m, a, o):
        o.retain_grad()
        outs.append(o)

    handles = [layer.register_forward_hook(keep) for layer in layers]
    gen = torch.Generator().manual_seed(seed)
    sums = [None] * len(layers)
    count = [0] * len(layers)
    was = model.training
    model.eval()
    for chunk in inputs.split(256):
        outs.clear()
        logits = model(chunk)
        sampled = torch.multinomial(F.softmax(logits.detach(), -1), 1, generator=gen).squeeze(1)
        F.cross_entropy(logits, sampled, reduction="sum").backward()
        for i, o in enumerate(outs):
            g = o.grad.double()
            g = g.permute(0, 2, 3, 1).reshape(-1, g.shape[1]) if g.dim() == 4 else g
            s = g.T @ g
            sums[i] = s if sums[i] is None else sums[i] + s
            count[i] += chunk.shape[0]  # per input: sum over positions, as K-FAC for convs
    model.train(was)
    model.zero_grad()
    for h in handles:
        h.remove()
    return [s / c for s, c in zip(sums, count)]


def damped_inverse(cov: Tensor, lam: float) -> Tensor:
    d = cov.shape[0]
    return torch.linalg.inv(cov + lam * cov.diagonal().mean().clamp_min(1e-12) * torch.eye(d, dtype=cov.dtype))


def gpm_projector(cov: Tensor, energy: float) -> Tensor:
    """I - U U^T with U the top eigenvectors of ``cov`` holding ``energy`` of its trace."""
    vals, vecs = torch.linalg.eigh(cov)
    vals, vecs = vals.flip(0).clamp_min(0), vecs.flip(1)
    keep = int((torch.cumsum(vals, 0) / vals.sum() < energy).sum()) + 1
    u = vecs[:, :keep]
    return torch.eye(cov.shape[0], dtype=cov.dtype) - u @ u.T


def as_matrix(layer: nn.Module, weight: Tensor, bias: Tensor | None) -> Tensor:
    mat = weight.reshape(weight.shape[0], -1)
    return torch.cat([mat, bias[:, None]], 1) if bias is not None else mat


def weight_matrix(layer: nn.Module) -> Tensor:
    return as_matrix(layer, layer.weight.data, layer.bias.data if layer.bias is not None else None)


def grad_matrix(layer: nn.Module) -> Tensor:
    return as_matrix(layer, layer.weight.grad, layer.bias.grad if layer.bias is not None else None)


def from_matrix(layer: nn.Module, mat: Tensor) -> tuple[Tensor, Tensor | None]:
    if layer.bias is not None:
        return mat[:, :-1].reshape(layer.weight.shape), mat[:, -1]
    return mat.reshape(layer.weight.shape), None


def build_protected(model, x, y, seed, protect, n_aug):
    pools, setup = {}, 0
    gen = torch.Generator().manual_seed(seed + 100)
    if "anchors" in protect:
        anchors = PGDAnchors(backend="builtin")
        pools["anchors"] = anchors.generate(model, x, y, 10, generator=gen).inputs
        setup += len(x) * anchors.per_instance * anchors.steps  # PGD: forward + backward per step
    if "aug" in protect:
        pools["aug"] = shifted_copies(x, n_aug, 1, gen)
    refs = {name: predict(model, pool) for name, pool in pools.items()}
    setup += sum(len(p) for p in pools.values())
    return pools, refs, setup


def package_finisher(model, original, x, y, protected, proxy, lam=1e-3, margin=0.1, rounds=3):
    """LastLayerEdit.finish: edit the reached and (if exact) the original weights, keep the one that moves the
    pre-trained outputs least on held-out shifted copies; returns (finished_by, left)."""
    remaining = int((~is_unlearned(predict(model, x), y)).sum())
    if remaining == 0:
        return "steps", 0
    stepped = copy.deepcopy(model.state_dict())
    head = last_linear(model)
    exact = len(y) < (head.in_features + 1) / 2
    results = []
    for start in ["reached", *(["original"] if exact else [])]:
        model.load_state_dict(stepped if start == "reached" else original)
        left = len(y)
        for _ in range(rounds):
            edit_last_layer(model, x, y, protected, margin=margin, lam=lam)
            left = int((~is_unlearned(predict(model, x), y)).sum())
            if left == 0:
                break
        damage = float(kl(predict(model, proxy[0]), proxy[1]))
        results.append((left, damage, start, copy.deepcopy(model.state_dict())))
    left, _, start, weights = min(results, key=lambda r: (r[0], r[1]))
    if left >= remaining:
        start, left, weights = "none", remaining, stepped
    model.load_state_dict(weights)
    return {"reached": "steps+edit", "original": "edit"}.get(start, start), left


def run(
    model_name="nobn",
    k=32,
    seed=0,
    *,
    method="steps",
    protect=("anchors", "aug"),
    n_aug=20,
    weight=10.0,
    lr=1e-4,
    max_steps=1000,
    stall=100,
    finisher=True,
    train_last=None,
    lr_decay=None,
    gpm=None,
    gpm_layers=None,
    keep_margin=0.0,
    hold_crossed=0.0,
    trace=0,
    # cgn
    metric="A",
    lam=1e-3,
    target=0.1,
    iters=20,
    hold=True,
    step_scale=1.0,
    fisher_lam=1e-3,
    then_steps=0,
):
    split, pre = task(model_name)
    model = copy.deepcopy(pre).eval()
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(split.y_train), generator=g)
    fi = perm[:k]
    x, y = split.x_train[fi], split.y_train[fi]
    test0 = accuracy(model, split.x_test, split.y_test)
    original = copy.deepcopy(model.state_dict())
    proxy_in = shifted_copies(x, 8, 1, torch.Generator().manual_seed(seed + 40))
    proxy = (proxy_in, predict(model, proxy_in))
    t0 = time.perf_counter()
    pools, refs, setup_samples = build_protected(model, x, y, seed, protect, n_aug)
    pool_secs = time.perf_counter() - t0
    protected = torch.cat(list(pools.values())) if pools else x[:0]
    layers = layers_of(model)
    chosen = layers if not train_last else layers[-train_last:]
    step_samples, steps, flips, finished_by, curve = 0, 0, 0, "steps", []

    if method == "cgn":
        covs = input_covariances(model, chosen, protected)
        setup_samples += len(protected)
        if metric == "kfac":
            fish = output_fisher(model, chosen, protected, seed)
            setup_samples += len(protected)
            s_inv = [damped_inverse(s, fisher_lam) for s in fish]
        if metric in ("A", "kfac"):
            a_inv = [damped_inverse(c, lam) for c in covs]
        elif metric == "gpm":
            a_inv = [gpm_projector(c, gpm or 0.99) for c in covs]
        for _ in range(iters):
            with torch.no_grad():
                m = margins(predict(model, x), y)
            step_samples += k
            active = m > -target
            if not bool(active.any()):
                break
            rows = torch.arange(k) if hold else active.nonzero().squeeze(1)
            want = torch.where(active, -(m + target), torch.zeros_like(m))[rows].double()
            # per-sample gradients of the margin, each layer's as an [out, d] matrix
            grads = []
            model.eval()
            for i in rows.tolist():
                model.zero_grad()
                margins(model(x[i : i + 1]), y[i : i + 1]).sum().backward()
                grads.append([grad_matrix(lay).double() for lay in chosen])
            step_samples += len(rows)
            pre_g = []
            for gi in grads:
                row = []
                for j, gm in enumerate(gi):
                    p = gm @ a_inv[j] if metric != "I" else gm
                    if metric == "kfac":
                        p = s_inv[j] @ p
                    row.append(p)
                pre_g.append(row)
            gram = sum(
                torch.stack([gi[j].flatten() for gi in grads]) @ torch.stack([pi[j].flatten() for pi in pre_g]).T
                for j in range(len(chosen))
            )
            alpha = torch.linalg.pinv(gram) @ want
            with torch.no_grad():
                for j, layer in enumerate(chosen):
                    delta = torch.einsum("a,aij->ij", alpha, torch.stack([pi[j] for pi in pre_g])) * step_scale
                    dw, db = from_matrix(layer, delta.float())
                    layer.weight.add_(dw)
                    if db is not None:
                        layer.bias.add_(db)
            steps += 1
            if trace:
                curve.append((steps, accuracy(model, split.x_test, split.y_test)))
        model.zero_grad()
        remaining = int((~is_unlearned(predict(model, x), y)).sum())
        finished_by = "cgn"
        if finisher and remaining > 0:
            finished_by, remaining = package_finisher(model, original, x, y, protected, proxy)
            finished_by = "cgn+" + finished_by
    else:
        params = [p for layer in chosen for p in layer.parameters()]
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        groups = []
        for depth, layer in enumerate(reversed(chosen)):
            groups.append({"params": list(layer.parameters()), "lr": lr * (lr_decay**depth if lr_decay else 1.0)})
        optim = torch.optim.Adam(groups, lr=lr)
        projectors = None
        if gpm is not None:
            proj_layers = chosen if not gpm_layers else chosen[-gpm_layers:]
            covs = input_covariances(model, proj_layers, protected)
            setup_samples += len(protected)
            projectors = {id(lay): gpm_projector(c, gpm).float() for lay, c in zip(proj_layers, covs)}
        bg = torch.Generator().manual_seed(seed + 1)
        scale, best, best_step = 1.0, k + 1, 0
        prev = None
        held_x, held_ref = None, None
        model.train()
        while steps < max_steps:
            logits = model(x)
            loss = forget_loss(logits, y, None, kind="margin", margin=keep_margin)
            step_samples += k
            for name, pool in pools.items():
                if weight * scale <= 0:
                    continue
                idx = torch.randint(0, len(pool), (min(256, len(pool)),), generator=bg)
                loss = loss + weight * scale * kl(model(pool[idx]), refs[name][idx])
                step_samples += len(idx)
            if hold_crossed and held_x is not None and len(held_x):
                loss = loss + hold_crossed * kl(model(held_x), held_ref)
                step_samples += len(held_x)
            optim.zero_grad()
            loss.backward()
            if projectors is not None:
                before = {id(lay): weight_matrix(lay).clone() for lay in chosen if id(lay) in projectors}
            optim.step()
            if projectors is not None:
                with torch.no_grad():
                    for lay in chosen:
                        if id(lay) not in projectors:
                            continue
                        now = weight_matrix(lay)
                        delta = (now - before[id(lay)]) @ projectors[id(lay)]
                        dw, db = from_matrix(lay, before[id(lay)] + delta)
                        lay.weight.copy_(dw)
                        if db is not None:
                            lay.bias.copy_(db)
            steps += 1
            out = predict(model, x)
            step_samples += k
            un = is_unlearned(out, y)
            remaining = int((~un).sum())
            if prev is not None:
                flips += int((un != prev).sum())
            if hold_crossed:  # freeze each instance's logits at the step it first crosses
                if held_x is None:
                    held_mask, held_ref_all = torch.zeros_like(un), torch.zeros_like(out)
                newly = un & ~held_mask
                held_ref_all[newly] = out[newly]
                held_mask = held_mask | un
                held_x, held_ref = x[held_mask], held_ref_all[held_mask]
            prev = un
            if trace and steps % trace == 0:
                curve.append((steps, accuracy(model, split.x_test, split.y_test), remaining, flips))
            if remaining == 0:
                break
            if remaining < best:
                best, best_step = remaining, steps
            elif stall and steps - best_step >= stall:
                scale, best_step = max(scale / 2, 1 / 1024), steps
        for p in model.parameters():
            p.requires_grad_(True)
        if finisher and remaining > 0:
            finished_by, remaining = package_finisher(model, original, x, y, protected, proxy)
            setup_samples += 0
    secs = time.perf_counter() - t0
    if remaining > 0:  # the package restores the original weights
        model.load_state_dict(original)
    test1 = accuracy(model, split.x_test, split.y_test)
    return dict(
        model=model_name,
        k=k,
        seed=seed,
        method=method,
        remaining=remaining,
        drop=round(100 * (test0 - test1), 2),
        steps=steps,
        flips=flips,
        samples=setup_samples + step_samples,
        setup_samples=setup_samples,
        step_samples=step_samples,
        secs=round(secs, 1),
        pool_secs=round(pool_secs, 1),
        finished_by=finished_by,
        **({"curve": curve} if trace else {}),
    )


if __name__ == "__main__":
    kw = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    print(json.dumps(run(**kw)))
