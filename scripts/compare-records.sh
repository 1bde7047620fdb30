#!/usr/bin/env bash
# Byte comparison of metrics.jsonl and predictions.bin between two ilr binaries, for changes that must
# not alter any record (summary.json may differ): a plain run, a step-schedule run, a diverging run
# and a checkpointed two-run sweep, each trained by both binaries into the same run ids.
# Usage: scripts/compare-records.sh BEFORE/ilr AFTER/ilr   (exits 1 when a file differs)
set -u
A=$1; B=$2; W=$(mktemp -d /tmp/cmp.XXXX)
common=(--device cpu --steps 300 --stats-every 10 --eval-every 100)
cat > $W/sweep.toml <<'SPEC'
[sweep]
name = "cmp"
[base]
data = { augment = false, synthetic = { train = 512, test = 128, size = 8 } }
model = { depth = 8, width = 0.25 }
optim = { lr = 0.2, momentum = 0.9 }
train = { steps = 200, batch_size = 16, stats_every = 5, eval_every = 50, device = "cpu" }
[grid]
seed = [0, 1]
SPEC
for side in a b; do
  bin=$A; [ $side = b ] && bin=$B
  $bin train "${common[@]}" --out $W/$side/plain >/dev/null 2>&1
  $bin train "${common[@]}" --set optim.schedule.kind=step --set 'optim.schedule.lr_epochs=[0.1]' --out $W/$side/step >/dev/null 2>&1
  $bin train "${common[@]}" --lr 50 --scale-invariant false --momentum 0.9 --out $W/$side/diverge >/dev/null 2>&1
  $bin sweep $W/sweep.toml --out $W/$side/sweep --checkpoint-every 50 >/dev/null 2>&1
done
n=0; bad=0
for f in $(cd $W/a && find . -name metrics.jsonl -o -name predictions.bin | sort); do
  n=$((n+1))
  if cmp -s $W/a/$f $W/b/$f; then echo "same  $f"; else echo "DIFF  $f"; bad=$((bad+1)); fi
done
for f in $(cd $W/a && find . -name summary.json | sort); do
  s=$(grep -o '"status": *"[a-z]*"' $W/a/$f | head -1); echo "      $f $s"
done
echo "$n files compared, $bad differ ($W)"
[ "$bad" = 0 ]
