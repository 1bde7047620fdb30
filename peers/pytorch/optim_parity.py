#!/usr/bin/env python3
"""Parity of ilr's AdamW, Adam + L2 and Lion with PyTorch: from the same weights and the same fixed
sequence of random gradients, 1 and 10 steps in ilr and in torch, every tensor compared.

    python3 peers/pytorch/optim_parity.py               # runs ilr's side with cargo, then torch's
    python3 peers/pytorch/optim_parity.py --ilr DIR      # ilr's outputs already in DIR/<config>/
    python3 peers/pytorch/optim_parity.py --configs      # the configs as JSON (for tests/optim_parity.rs)

ilr's side is examples/optim_step.rs (see its doc for the files): the trained tensors of a small
PreResNet stepped by ilr's Optimizer in f32 on the CPU. torch's side: torch.optim.AdamW,
torch.optim.Adam(weight_decay=λ) (both with foreach=False, the single-tensor path ilr's kernels
mirror) and Lion written out below in lion-pytorch's order of operations (the package may not be
installable), one parameter per ilr tensor, in float32 on the CPU.

Error measure: per tensor, max |ilr − torch| / max |torch|, the largest difference in units of the
tensor's largest magnitude. Element-wise relative error is meaningless where torch's value is near
0 (an m or a weight that happens to be ~1e-9), and both sides round each element to f32, so two
correct implementations that associate a product differently differ by a few ulps of the values
involved, i.e. ≲ 1e-7 of the tensor's scale. Bound: 1e-6 (~8 ulps) for every tensor of params and
optimizer state after 1 and after 10 steps.

Lion: w moves by ±η·sign(c), c = β₁m + (1−β₁)g, so where |c| is within rounding of 0 the two sides
may take opposite signs (a 2η difference). Those elements, |c| ≤ 1e-6·(|β₁m| + |(1−β₁)g|) computed
in float64 from torch's m, are counted, and left out of the weight comparison from that step on;
the rest is held to 1e-6. m does not depend on the sign and is compared whole. Exact zeros (m = 0
and g = 0 at the first step, where sign(0) = 0 on both sides) are not near-zero by this test's
standard: they are compared.

Exit status 1 if any comparison fails.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
STEPS = 10
TOL = 1e-6
# name: the [optim] keys given to ilr (TOML).
CONFIGS = {
    "adamw": ['kind="adamw"', "lr=1e-3", "wd=0.1"],
    "adamw-betas": ['kind="adamw"', "lr=3e-3", "wd=0.05", "betas=[0.8, 0.99]", "eps=1e-6"],
    "adam": ['kind="adam"', "lr=1e-3", "wd=0.1"],
    "lion": ['kind="lion"', "lr=1e-4", "wd=1.0"],
}


class Lion(torch.optim.Optimizer):
    """Lion as lion-pytorch (lucidrains) steps it, per parameter: decay w by (1 − ηλ); then
    c = β₁·m + (1−β₁)·g (m scaled in place of a copy, g added with alpha); w += −η·sign(c); then
    m = β₂·m + (1−β₂)·g (scaled in place, g added with alpha). The state is called exp_avg there."""

    def __init__(self, params, lr, betas, weight_decay):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, wd, (beta1, beta2) = group["lr"], group["weight_decay"], group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                p.data.mul_(1.0 - lr * wd)
                c = m.clone().mul_(beta1).add(p.grad, alpha=1.0 - beta1)
                p.add_(c.sign_(), alpha=-lr)
                m.mul_(beta2).add_(p.grad, alpha=1.0 - beta2)


def read_f32(path, shape=None):
    a = np.fromfile(path, dtype="<f4")
    return a if shape is None else a.reshape(shape)


def rel_err(a, b, mask=None):
    """max |a − b| / max |b| over one tensor (over `mask` where given); inf if anything is not finite."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if mask is not None:
        a, b = a[mask], b[mask]
    if a.size == 0:
        return 0.0
    d = np.abs(a - b)
    if not np.all(np.isfinite(d)):
        return float("inf")
    return float(d.max() / max(np.abs(b).max(), np.finfo(np.float64).tiny))


def torch_optimizer(meta, params):
    kind, lr, wd = meta["kind"], meta["lr"], meta["wd"]
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(meta["betas"]), eps=meta["eps"], weight_decay=wd, foreach=False)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(meta["betas"]), eps=meta["eps"], weight_decay=wd, foreach=False)
    if kind == "lion":
        return Lion(params, lr=lr, betas=tuple(meta["betas"]), weight_decay=wd)
    sys.exit(f"no torch optimizer for kind {kind!r}")


def compare(name, d):
    """Steps torch like ilr's run in `d` and prints the comparison; returns whether it passed."""
    meta = json.loads((d / "layout.json").read_text())
    n, steps = meta["num_params"], meta["steps"]
    w0, grads = read_f32(d / "w0.f32"), read_f32(d / "grads.f32", (steps, n))
    tensors = meta["tensors"]
    sl = [slice(t["offset"], t["offset"] + t["len"]) for t in tensors]
    params = [torch.nn.Parameter(torch.from_numpy(w0[s].copy()).reshape(t["shape"])) for s, t in zip(sl, tensors)]
    opt = torch_optimizer(meta, params)
    lion = meta["kind"] == "lion"
    flipped = [np.zeros(t["len"], bool) for t in tensors]
    betas = meta["betas"]
    desc = f"lr {meta['lr']:g}, wd {meta['wd']:g}, betas {tuple(betas)}" + (f", eps {meta['eps']:g}" if meta["eps"] is not None else "")
    print(f"{name} ({meta['kind']}: {desc}): {len(tensors)} tensors, {n} parameters, {steps} steps")
    ok = True
    near_zero_total = 0
    for s in range(steps):
        for p, sli in zip(params, sl):
            p.grad = torch.from_numpy(grads[s, sli].copy()).reshape(p.shape)
        if lion:
            for k, p in enumerate(params):
                m = opt.state[p]["exp_avg"].reshape(-1).double().numpy() if p in opt.state else np.zeros(p.numel())
                g = p.grad.reshape(-1).double().numpy()
                c = betas[0] * m + (1 - betas[0]) * g
                near = (np.abs(c) <= 1e-6 * (np.abs(betas[0] * m) + np.abs((1 - betas[0]) * g))) & (c != 0)
                near_zero_total += int(near.sum())
                flipped[k] |= near
        opt.step()
        if s + 1 not in (1, steps):
            continue
        after = d / f"after_{s + 1}"
        worst = {}
        for key in ["params"] + meta["state_names"]:
            ilr = read_f32(after / f"{key}.f32")
            for k, (p, sli, t) in enumerate(zip(params, sl, tensors)):
                ours = (p.detach() if key == "params" else opt.state[p][key]).reshape(-1).numpy()
                mask = ~flipped[k] if key == "params" and lion else None
                e = rel_err(ilr[sli], ours, mask)
                if e > worst.get(key, (-1.0, ""))[0]:
                    worst[key] = (e, t["name"])
        if not lion:
            torch_t = {float(opt.state[p]["step"]) for p in params}
            if torch_t != {float(s + 1)}:
                print(f"  torch's step count is {torch_t}, expected {s + 1}")
                ok = False
        passed = all(e <= TOL for e, _ in worst.values())
        ok &= passed
        parts = ", ".join(f"{k} {e:.1e} ({t})" for k, (e, t) in worst.items())
        print(f"  after {s + 1:2d} step{'s' if s else ' '}: max rel err {parts}  {'PASS' if passed else 'FAIL'}")
    if lion:
        print(f"  Lion: {near_zero_total} element-steps with |c| within rounding of 0 (left out of params from then on)")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ilr", type=pathlib.Path, help="directory with ilr's outputs, one subdirectory per config")
    ap.add_argument("--configs", action="store_true", help="print the configs and the step count as JSON and exit")
    args = ap.parse_args()
    if args.configs:
        print(json.dumps({"steps": STEPS, "configs": CONFIGS}))
        return
    print(f"torch {torch.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        base = args.ilr or pathlib.Path(tmp)
        ok = True
        for name, keys in CONFIGS.items():
            d = base / name
            if args.ilr is None:
                cmd = ["cargo", "run", "--release", "--quiet", "--example", "optim_step", "--", str(d), str(STEPS), *keys]
                subprocess.run(cmd, cwd=ROOT, check=True)
            ok &= compare(name, d)
    print("all within", TOL if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
