#!/usr/bin/env python3
"""ilr and PyTorch on a shared, noisy machine: alternate `ilr bench` and bench_torch.py for several
rounds, each round started when the CPU is idle, then merge the rounds (median of the per-round
medians; min of the mins) into one file per tool and print compare.py's table for both statistics.

    python3 peers/pytorch/interleave.py --ilr target/release/ilr --python /tmp/torchvenv/bin/python \\
        --threads 2 --rounds 5 --filter "preresnet20 b128" --out /tmp/ab

Contention only ever adds time, so on a machine shared with other jobs the min over rounds is the
better estimate of the quiet-machine figure; the median shows the spread.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def busy_cores(window=2.0):
    """CPU cores' worth of busy time over `window` seconds (from /proc/stat)."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]
    t0, i0 = snap()
    time.sleep(window)
    t1, i1 = snap()
    total = max(t1 - t0, 1)
    return (os.cpu_count() or 1) * (1 - (i1 - i0) / total)


def wait_idle(max_busy, max_wait):
    start = time.time()
    while time.time() - start < max_wait:
        b = busy_cores()
        if b <= max_busy:
            return b
    return busy_cores()


def merge(files):
    """One file from several rounds of the same tool."""
    out = json.loads(json.dumps(files[0]))
    by_key = {}
    for f in files:
        for r in f["results"]:
            by_key.setdefault((r["name"], r["impl"], r["device"], r["shape"]), []).append(r)
    out["results"] = []
    for rs in by_key.values():
        r = dict(rs[0])
        r["median_s"] = statistics.median(x["median_s"] for x in rs)
        r["min_s"] = min(x["min_s"] for x in rs)
        r["reps"] = sum(x["reps"] for x in rs)
        if r.get("bytes"):
            r["gbps"] = r["bytes"] / r["median_s"] / 1e9
        if r.get("images_per_s"):
            r["images_per_s"] = rs[0]["images_per_s"] * rs[0]["median_s"] / r["median_s"]
        r["pct_of_copy"] = None
        out["results"].append(r)
    out["notes"] = out.get("notes", []) + [f"merged from {len(files)} interleaved rounds: median of medians, min of mins"]
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ilr", default="target/release/ilr")
    p.add_argument("--python", default=sys.executable, help="a Python with PyTorch")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--filter", default="preresnet20 b128")
    p.add_argument("--out", default="bench-ab")
    p.add_argument("--max-busy", type=float, default=0.3, help="start a run when others use at most this many cores")
    p.add_argument("--max-wait", type=float, default=300, help="seconds to wait for idle before running anyway")
    p.add_argument("--torch-args", default="", help="extra arguments for bench_torch.py")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    runs = {"ilr": [], "torch": []}
    for k in range(a.rounds):
        for tool in ("ilr", "torch"):
            busy = wait_idle(a.max_busy, a.max_wait)
            path = os.path.join(a.out, f"{tool}-round{k}.json")
            if tool == "ilr":
                cmd = [a.ilr, "bench", "--device", "cpu", "--quick", "--threads", str(a.threads), "--filter", a.filter,
                       "--json", path]
            else:
                cmd = [a.python, os.path.join(HERE, "bench_torch.py"), "--device", "cpu", "--quick", "--threads",
                       str(a.threads), "--filter", a.filter, "--json", path, *a.torch_args.split()]
            print(f"round {k} {tool} (others busy: {busy:.2f} cores): {' '.join(cmd)}", file=sys.stderr)
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            with open(path) as f:
                d = json.load(f)
            d["notes"] = d.get("notes", []) + [f"round {k}: others used {busy:.2f} cores before the run"]
            runs[tool].append(d)
    merged = {}
    for tool, files in runs.items():
        merged[tool] = os.path.join(a.out, f"{tool}.json")
        with open(merged[tool], "w") as f:
            json.dump(merge(files), f, indent=2)
    for stat in ("median", "min"):
        print(f"\n== {stat} over rounds ==")
        subprocess.run([sys.executable, os.path.join(HERE, "compare.py"), "--stat", stat, merged["ilr"], merged["torch"]],
                       check=True)


if __name__ == "__main__":
    main()
