#!/usr/bin/env python3
"""PyTorch peers of `ilr bench`, on the same machine and the same shapes, written in ilr's JSON
schema (ilr-bench/1) so that compare.py can put them side by side.

    python3 peers/pytorch/bench_torch.py --device cpu --threads 2 --json torch-cpu.json
    python3 peers/pytorch/bench_torch.py --device cuda --json torch-cuda.json
    python3 peers/pytorch/compare.py ilr.json torch-cpu.json

Cases (names and shape labels match src/bench/work.rs exactly):
  copy            dst.copy_(src)                              (device copy ceiling)
  bn_fwd_train    F.batch_norm(training=True) + relu_          (cuDNN on a GPU)
  bn_bwd          autograd of relu(batch_norm) w.r.t. x, γ, β
  sgd_step        torch.optim.SGD(fused=True) over the net's parameter tensors (foreach if fused
                  is unavailable), η = 0.1, λ = 5e-4, γ = 0.9
  adamw_step      torch.optim.AdamW(foreach=True) and AdamW(fused=True) over the same tensors,
                  η = 1e-3, λ = 1e-2, β = (0.9, 0.999) (ilr also times lion_step; torch has no Lion)
  reduce_sqnorm   torch._foreach_norm over the same tensors
  train_step      zero_grad, forward, cross-entropy, backward, SGD step, for each variant:
                  eager fp32; eager channels_last (CPU) or channels_last+AMP bf16 (GPU);
                  torch.compile (GPU; --variants to choose). PreResNet-depth on 32x32 at each
                  --train-batches ("preresnet20 b128 32x32"), then the tiny recipes' net,
                  PreResNet-8 x0.5 at batch 32 on 8x8 and 16x16 ("preresnet8x0.5 b32 8x8",
                  "preresnet8x0.5 b32 16x16"; --filter preresnet8x0.5 for those alone)
Timing, as ilr's src/bench/timing.rs: one calibration call, calls batched so that a sample lasts at
least 2 ms (--quick) or 5 ms, warmup, then samples (median and min); CUDA events on a GPU. Kernels
cycle through copies of their buffers filling --cold-mib, so each call runs from DRAM (as ilr).
"""

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from preresnet import PreResNet, bn_input_shapes  # noqa: E402

SCHEMA = "ilr-bench/1"
# Bytes per element (per parameter) as ilr counts them (src/bench/cost.rs).
BYTES = {
    "bn_fwd_train": (12, 8),
    "bn_bwd": (28, 16),
    "sgd_step": (20, 20),
    "adamw_step": (28, 28),
    "reduce_sqnorm": (4, 4),
}
# The tiny recipes' training steps (experiments/*.tiny.toml; TINY_STEPS in src/bench/work.rs):
# (depth, batch, width, image size), the argument order of step_label.
TINY_STEPS = [(8, 32, 0.5, 8), (8, 32, 0.5, 16)]


def step_label(depth, batch, width=1.0, size=32):
    """ilr's shape label of a training step (src/bench/cost.rs, Net::step_label)."""
    net = f"preresnet{depth}" if width == 1.0 else f"preresnet{depth}x{width}"
    return f"{net} b{batch} {size}x{size}"


def cycle(fns):
    """One callable that calls fns[0], fns[1], ... in turn."""
    state = [0]

    def call():
        fns[state[0]]()
        state[0] = (state[0] + 1) % len(fns)

    return call


def measure(fn, device, reps, min_sample_s, budget_s, warmup):
    """Per-call (median, min, reps) of fn()."""

    def timed(calls):
        if device == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(calls):
                fn()
            b.record()
            b.synchronize()
            return a.elapsed_time(b) * 1e-3
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        return time.perf_counter() - t0

    once = max(timed(1), 1e-9)
    calls = min(max(math.ceil(min_sample_s / once), 1), 100_000)
    n = max(1, min(reps, max(3, int(budget_s / (once * calls)))))
    for _ in range(0 if once * calls > budget_s / 4 else warmup):
        timed(calls)
    samples = [timed(calls) / calls for _ in range(n)]
    return statistics.median(samples), min(samples), n


class Runner:
    def __init__(self, args):
        self.a = args
        self.dev = torch.device(args.device)
        self.results = []
        self.copy_gbps = None
        self.plan = dict(reps=5, min_sample_s=2e-3, budget_s=3.0, warmup=1) if args.quick else \
            dict(reps=15, min_sample_s=5e-3, budget_s=15.0, warmup=2)

    def add(self, name, impl, shape, fn, bytes_=None, min_bytes=None, images=None, warmup=0):
        if self.a.filter and self.a.filter not in name and self.a.filter not in shape:
            return
        for _ in range(warmup):
            fn()
        if self.a.device == "cuda":
            torch.cuda.synchronize()
        med, mn, n = measure(fn, self.a.device, **self.plan)
        gbps = bytes_ / med / 1e9 if bytes_ else None
        if name == "copy":
            self.copy_gbps = gbps
        r = dict(name=name, impl=impl, device=self.a.device, shape=shape, bytes=bytes_, min_bytes=min_bytes,
                 flops=None, median_s=med, min_s=mn, reps=n, gbps=gbps,
                 pct_of_copy=100 * gbps / self.copy_gbps if gbps and self.copy_gbps else None,
                 gflops=None, images_per_s=images / med if images else None)
        self.results.append(r)
        rate = f"{r['images_per_s']:.1f} images/s" if images else (f"{gbps:.2f} GB/s" if gbps else "")
        print(f"  {name:<14} {impl:<34} {shape:<24} {med * 1e3:10.3f} ms  {rate}", file=sys.stderr)

    # ---- kernels -------------------------------------------------------------------------------
    def copy(self):
        mib = self.a.copy_mib or (1024 if self.a.device == "cuda" else (128 if self.a.quick else 256))
        n = (mib << 20) // 4
        src, dst = torch.rand(n, device=self.dev), torch.empty(n, device=self.dev)
        self.add("copy", "torch copy_", f"{mib} MiB", lambda: dst.copy_(src), 2 * n * 4, 2 * n * 4)

    def sets(self, footprint):
        """Independent copies of a kernel's buffers that fill --cold-mib (as ilr's Work::build), so
        each call streams from DRAM instead of a cache warmed by the previous call."""
        return max(1, -(-(self.a.cold_mib << 20) // footprint))

    def batchnorm(self, shape):
        n, c, h, w = shape
        label = f"n{n} c{c} {h}x{w} relu"
        elems = n * c * h * w
        impl = "torch cudnn bn+relu" if self.a.device == "cuda" else "torch bn+relu"
        fwds, bwds = [], []
        for _ in range(self.sets(16 * elems)):  # the backward's x, y, dy, dx
            x = torch.randn(shape, device=self.dev, requires_grad=True)
            g = torch.rand(c, device=self.dev, requires_grad=True)
            b = torch.randn(c, device=self.dev, requires_grad=True)
            rm, rv = torch.zeros(c, device=self.dev), torch.ones(c, device=self.dev)

            def fwd(x=x, g=g, b=b, rm=rm, rv=rv):
                with torch.no_grad():
                    F.relu_(F.batch_norm(x, rm, rv, g, b, True, 0.1, 1e-5))

            y = F.relu(F.batch_norm(x, rm, rv, g, b, True, 0.1, 1e-5))
            dy = torch.randn_like(y)
            fwds.append(fwd)
            bwds.append(lambda y=y, x=x, g=g, b=b, dy=dy: torch.autograd.grad(y, (x, g, b), dy, retain_graph=True))
        fb, fm = BYTES["bn_fwd_train"]
        self.add("bn_fwd_train", impl, label, cycle(fwds), fb * elems, fm * elems)
        bb, bm = BYTES["bn_bwd"]
        self.add("bn_bwd", impl, label, cycle(bwds), bb * elems, bm * elems)

    def optimizer(self, depth):
        count = sum(p.numel() for p in PreResNet(depth).parameters())
        label = f"preresnet{depth} p{count}"
        steps, norms, impl = [], [], None
        for _ in range(self.sets(12 * count)):  # w, g, v
            params = [p.detach().to(self.dev).clone().requires_grad_(True) for p in PreResNet(depth).parameters()]
            for p in params:
                p.grad = torch.randn_like(p) * 1e-3
            try:
                opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4, fused=True)
                opt.step()
                impl = "torch SGD(fused=True)"
            except (RuntimeError, TypeError):
                opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4, foreach=True)
                impl = "torch SGD(foreach=True)"
            steps.append(opt.step)
            ws = [p.detach() for p in params]
            norms.append(lambda ws=ws: torch._foreach_norm(ws))
        self.add("sgd_step", impl, label, cycle(steps), BYTES["sgd_step"][0] * count, BYTES["sgd_step"][1] * count)
        # AdamW at the torch defaults' scale (η = 1e-3, λ = 1e-2), foreach and fused, as ilr's adamw_step.
        for kind in ("foreach", "fused"):
            adam_steps = []
            for _ in range(self.sets(16 * count)):  # w, g, m, v
                params = [p.detach().to(self.dev).clone().requires_grad_(True) for p in PreResNet(depth).parameters()]
                for p in params:
                    p.grad = torch.randn_like(p) * 1e-3
                try:
                    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2, **{kind: True})
                    opt.step()
                except (RuntimeError, TypeError) as e:
                    print(f"AdamW({kind}=True) unavailable here: {e}", file=sys.stderr)
                    break
                adam_steps.append(opt.step)
            if adam_steps:
                b, m = BYTES["adamw_step"]
                self.add("adamw_step", f"torch AdamW({kind}=True)", label, cycle(adam_steps), b * count, m * count)
        # _foreach_norm reads only w: the sets' w fill a third of --cold-mib, still several times the
        # last-level cache.
        self.add("reduce_sqnorm", "torch _foreach_norm", label, cycle(norms), 4 * count, 4 * count)

    # ---- training step -------------------------------------------------------------------------
    def train_step(self, depth, batch, variant, width=1.0, size=32):
        cuda = self.a.device == "cuda"
        model = PreResNet(depth, width=width).to(self.dev)
        x = torch.randn(batch, 3, size, size, device=self.dev)
        y = torch.randint(0, 10, (batch,), device=self.dev)
        channels_last = "channels_last" in variant
        amp = "amp" in variant
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        fwd = model
        if variant.startswith("compile"):
            mode = "reduce-overhead" if "reduce-overhead" in variant else None
            fwd = torch.compile(model, mode=mode)

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast(self.a.device, dtype=torch.bfloat16, enabled=amp):
                loss = F.cross_entropy(fwd(x), y)
            loss.backward()
            opt.step()

        warm = 3 if (variant.startswith("compile") or cuda) else 0
        self.add("train_step", f"torch {variant}", step_label(depth, batch, width, size), step,
                 images=batch, warmup=warm)

    def run(self):
        a = self.a
        self.copy()
        for batch in a.kernel_batches:
            seen = []
            for d in a.depths:
                for s in bn_input_shapes(PreResNet(d).to(self.dev), batch):
                    if s not in seen:
                        seen.append(s)
            for s in seen:
                self.batchnorm(s)
        for d in a.depths:
            self.optimizer(d)
        # The 32x32 nets at every batch, then the tiny recipes' steps at their own batch.
        steps = [[(d, batch, 1.0, 32) for d in a.depths] for batch in a.train_batches] + [TINY_STEPS]
        for group in steps:
            for v in a.variants:
                for d, batch, width, size in group:
                    self.try_train_step(d, batch, v, width, size)

    def try_train_step(self, depth, batch, variant, width, size):
        label = step_label(depth, batch, width, size)
        if self.a.filter and self.a.filter not in "train_step" and self.a.filter not in label:
            return  # (add() would skip it too, but after building the net)
        try:
            self.train_step(depth, batch, variant, width, size)
        except Exception as e:  # e.g. torch.compile without a C++ compiler
            print(f"  train_step {variant} {label}: skipped ({type(e).__name__}: {e})", file=sys.stderr)
            notes.append(f"train_step {variant} {label} skipped: {type(e).__name__}")


notes = []


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git(*args):
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                             cwd=os.path.dirname(os.path.abspath(__file__)))
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads); default: all cores")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", help="write results here (ilr-bench/1 schema)")
    p.add_argument("--depths", type=lambda s: [int(x) for x in s.split(",")], default=[20, 32, 56])
    p.add_argument("--kernel-batches", type=lambda s: [int(x) for x in s.split(",")], default=[128, 512])
    p.add_argument("--train-batches", type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--variants", type=lambda s: s.split(","),
                   help="train-step variants: eager, eager-channels_last, eager-channels_last+amp, compile, "
                        "compile-channels_last+amp, compile-reduce-overhead (default: CPU eager,eager-channels_last; "
                        "GPU eager,eager-channels_last+amp,compile,compile-channels_last+amp)")
    p.add_argument("--copy-mib", type=int)
    p.add_argument("--cold-mib", type=int, help="kernels cycle through buffer copies filling this many MiB "
                   "(default: 256 CPU, 1024 GPU, as ilr; 0: warm)")
    p.add_argument("--filter", help="only cases whose name or shape contains this")
    a = p.parse_args()
    cuda = a.device == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit("--device cuda: torch.cuda.is_available() is False")
    if a.threads:
        torch.set_num_threads(a.threads)
    a.train_batches = a.train_batches or ([128, 512] if cuda else [128])
    a.cold_mib = (1024 if cuda else 256) if a.cold_mib is None else a.cold_mib
    a.variants = a.variants or (["eager", "eager-channels_last+amp", "compile", "compile-channels_last+amp"] if cuda
                                else ["eager", "eager-channels_last"])
    if cuda:
        torch.backends.cudnn.benchmark = True
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    commit = git("rev-parse", "HEAD")
    dirty = (git("status", "--porcelain", "--untracked-files=no") or "") != "" if commit else None
    print(f"torch {torch.__version__} on {a.device}, {torch.get_num_threads()} threads", file=sys.stderr)
    r = Runner(a)
    r.run()
    out = dict(
        schema=SCHEMA, tool="pytorch", ilr_version=None, peer_version=f"torch {torch.__version__}",
        command=" ".join(sys.argv),
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        git_commit=commit, git_dirty=dirty,
        machine=dict(cpu_model=cpu_model(), cores=os.cpu_count(), threads=torch.get_num_threads(),
                     gpu=torch.cuda.get_device_name(0) if cuda else None,
                     os=f"{platform.system().lower()}-{platform.machine()}",
                     load_avg=list(load) if load else None),
        results=r.results, equilibrium=None, notes=notes,
    )
    if a.json:
        tmp = f"{a.json}.tmp.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, a.json)
        print(f"wrote {a.json}", file=sys.stderr)
    else:
        json.dump(out, sys.stdout, indent=2)


if __name__ == "__main__":
    main()
