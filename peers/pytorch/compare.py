#!/usr/bin/env python3
"""Side by side: two or more files in ilr's bench schema (ilr-bench/1), e.g. `ilr bench --json`
and bench_torch.py --json, matched on (name, device, shape).

    python3 peers/pytorch/compare.py [--stat median|min] ilr.json torch.json [more.json ...]

The first file is the reference. For every case it prints the reference's time and, per other
implementation, its time and the ratio  other / reference  (> 1: the reference is faster). Times are
per-call medians, or with --stat min the fastest sample (better on a machine shared with other work:
contention only adds time). Standard library only.
"""

import json
import sys


def fmt_s(s):
    if s is None:
        return "-"
    for unit, f in (("µs", 1e6), ("ms", 1e3)):
        if s * f < 1000:
            return f"{s * f:.1f} {unit}"
    return f"{s:.2f} s"


def load(path):
    with open(path) as f:
        d = json.load(f)
    if d.get("schema") != "ilr-bench/1":
        sys.exit(f"{path}: schema {d.get('schema')!r}, expected 'ilr-bench/1'")
    return d


def describe(d):
    m = d["machine"]
    who = d.get("ilr_version") and f"ilr {d['ilr_version']}" or d.get("peer_version") or d["tool"]
    commit = (d.get("git_commit") or "?")[:10]
    return (f"{who} | {m['cpu_model']} | {m['threads']} threads | GPU {m.get('gpu') or 'none'} | "
            f"load {m['load_avg'][0] if m.get('load_avg') else '?'} | {d['date']} | commit {commit}")


def main(args):
    stat = "median"
    if args[:1] == ["--stat"] and len(args) > 1:
        stat, args = args[1], args[2:]
    if stat not in ("median", "min") or len(args) < 2:
        sys.exit(__doc__)
    paths, key_s = args, f"{stat}_s"
    files = [load(p) for p in paths]
    for p, d in zip(paths, files):
        print(f"{p}: {describe(d)}")
    ref = files[0]
    m0 = ref["machine"]
    for p, d in zip(paths[1:], files[1:]):
        m = d["machine"]
        for k in ("cpu_model", "threads", "gpu"):
            if m.get(k) != m0.get(k):
                print(f"warning: {p} differs in {k}: {m.get(k)!r} vs {m0.get(k)!r}")
    others = [r for d in files[1:] for r in d["results"]]
    rows = []
    for r in ref["results"]:
        key = (r["name"], r["device"], r["shape"])
        for o in others:
            if (o["name"], o["device"], o["shape"]) == key:
                rows.append((r, o))
    if not rows:
        sys.exit("no case in common (same name, device and shape)")
    print(f"\n{'case':<14} {'dev':<5} {'shape':<24} {'reference':<22} {stat:>10}  "
          f"{'peer':<34} {stat:>10} {'peer/ref':>9}")
    for r, o in rows:
        print(f"{r['name']:<14} {r['device']:<5} {r['shape']:<24} {r['impl']:<22} {fmt_s(r[key_s]):>10}  "
              f"{o['impl']:<34} {fmt_s(o[key_s]):>10} {o[key_s] / r[key_s]:>8.2f}x")
    print("\npeer/ref > 1: the reference is faster by that factor; < 1: the peer is faster.")


if __name__ == "__main__":
    main(sys.argv[1:])
