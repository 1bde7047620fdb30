#!/usr/bin/env bash
# A real SLURM check of `ilr sweep --slurm`: start a one-node cluster on localhost (munge,
# slurmctld, slurmd; see ../shared/SLURM.md), generate the sbatch array script for a tiny CPU sweep,
# submit it, wait, and check that every run finished exactly once with a summary, that each array
# task logged to its %A_%a file, and that `ilr report` reads the result; then a sweep with more runs
# than the cluster's MaxArraySize (4 here), whose array ilr caps. Exits non-zero on failure.
#
# Everything the cluster needs lives in one scratch folder (config, spool, logs, pid files, munge
# socket), on its own ports, so the machine's /etc/slurm and any running cluster are left alone.
# Daemons are stopped by their pid files on exit.
#
# Usage: scripts/slurm-ci.sh            (as root; installs slurm-wlm and munge with apt if missing)
# Env:   ILR=path/to/ilr (default: cargo build --release, then target/release/ilr)
#        SLURM_CI_PORT=16817 (slurmctld port; slurmd uses the next one)   KEEP=1 keeps the scratch folder
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PORT=${SLURM_CI_PORT:-16817}
WORK=$(mktemp -d /tmp/ilr-slurm-ci.XXXXXX)
chmod 755 "$WORK"
log() { printf '[slurm-ci] %s\n' "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

stop_daemons() {
    for pidfile in "$WORK/slurmd.pid" "$WORK/slurmctld.pid" "$WORK/munged.pid"; do
        if [[ -s $pidfile ]]; then
            pid=$(cat "$pidfile")
            if kill -0 "$pid" 2>/dev/null; then
                kill "$pid" 2>/dev/null || true
                for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
                kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
            fi
        fi
    done
}
on_exit() {
    rc=$?
    stop_daemons
    if [[ $rc -ne 0 ]]; then
        for f in "$WORK"/slurmctld.log "$WORK"/slurmd.log "$WORK"/sweep/logs/*; do
            [[ -f $f ]] && { log "---- $f (last 30 lines)"; tail -n 30 "$f" >&2; }
        done
    fi
    if [[ ${KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit $rc
}
trap on_exit EXIT

# 1. Packages.
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# 2. The ilr binary.
if [[ -z ${ILR:-} ]]; then
    log "building ilr (release)"
    (cd "$ROOT" && cargo build --release --quiet --bin ilr)
    ILR=$ROOT/target/release/ilr
fi
ILR=$(realpath "$ILR")
[[ -x $ILR ]] || fail "no ilr binary at $ILR"

# 3. munge, with its own key, socket and pid file.
HOST=$(hostname)
mkdir -p "$WORK/munge" "$WORK/spool/ctld" "$WORK/spool/d"
dd if=/dev/urandom of="$WORK/munge/munge.key" bs=1024 count=1 status=none
chmod 700 "$WORK/munge"
chmod 400 "$WORK/munge/munge.key"
SOCK=$WORK/munge/munge.sock
munged --force --socket="$SOCK" --key-file="$WORK/munge/munge.key" --pid-file="$WORK/munged.pid" \
    --log-file="$WORK/munged.log" --seed-file="$WORK/munge/seed" 2>>"$WORK/munged.log" || fail "munged did not start"
munge -n --socket="$SOCK" | unmunge --socket="$SOCK" | grep -q "STATUS: *Success" || fail "munge round trip"

# 4. slurm.conf (SLURM.md's keys) in the scratch folder.
MEM=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
CPUS=$(nproc)
export SLURM_CONF=$WORK/slurm.conf
cat >"$SLURM_CONF" <<CONF
ClusterName=ilrci
SlurmctldHost=$HOST
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCK
CredType=cred/munge
StateSaveLocation=$WORK/spool/ctld
SlurmdSpoolDir=$WORK/spool/d
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/slurmctld.log
SlurmdLogFile=$WORK/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SchedulerType=sched/backfill
MaxArraySize=4
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF

# 5. The daemons.
slurmctld -f "$SLURM_CONF" || fail "slurmctld did not start"
slurmd -f "$SLURM_CONF" || fail "slurmd did not start"
for i in $(seq 60); do
    state=$(sinfo -h -N -o '%T' 2>/dev/null | head -n1 || true)
    [[ $state == idle ]] && break
    [[ $i == 60 ]] && fail "node not idle after 60 s (state: ${state:-none})"
    sleep 1
done
log "cluster up: node $HOST idle ($CPUS CPUs)"

# 6. A tiny CPU sweep: 2 λ_e × 2 seeds = 4 runs in 3 array tasks (so one task takes two runs).
cat >"$WORK/spec.toml" <<'SPEC'
[sweep]
name = "slurm-ci"
[base]
data = { augment = false, synthetic = { train = 256, test = 64, size = 8 } }
model = { depth = 8, width = 0.25 }
optim = { lr = 0.2, momentum = 0.0 }
train = { steps = 200, batch_size = 16, stats_every = 5, eval_every = 20, device = "cpu" }
[grid]
"optim.lambda_e" = [1.6e-2, 8e-3]
seed = [0, 1]
SPEC
OUT=$WORK/sweep
"$ILR" sweep "$WORK/spec.toml" --out "$OUT" --slurm --array-tasks 3 --cpus-per-task 1 --max-concurrent 2 \
    --time 00:10:00 --partition debug --checkpoint-every 50 >/dev/null
grep -q -- '--array=0-2%2' "$OUT/sweep.sbatch" || fail "sbatch script lacks the array line"
log "submitting $OUT/sweep.sbatch"
JOB=$(sbatch --parsable --wait "$OUT/sweep.sbatch") || fail "sbatch --wait reported a failed task"
JOB=${JOB%%;*}
log "array job $JOB finished"

# 7. Checks: 3 task logs, 4 runs each trained exactly once, a readable report.
logs=$(find "$OUT/logs" -name "ilr-slurm-ci-${JOB}_*.out" | wc -l)
[[ $logs == 3 ]] || fail "expected 3 task logs named ilr-slurm-ci-${JOB}_<task>.out, found $logs"
runs=$(find "$OUT/runs" -mindepth 2 -maxdepth 2 -name summary.json | wc -l)
[[ $runs == 4 ]] || fail "expected 4 finished runs, found $runs"
trained=$(cat "$OUT"/logs/*.out | grep -c '^\[[0-9]*/[0-9]*\] .*in [0-9.]*s$' || true)
[[ $trained == 4 ]] || fail "expected 4 runs trained once across the tasks, the logs show $trained"
for t in 0 1 2; do
    grep -q "shard $t/3" "$OUT/logs/ilr-slurm-ci-${JOB}_$t.out" || fail "task $t did not run shard $t/3"
done
"$ILR" report "$OUT" --no-plots >"$WORK/report.txt" || fail "ilr report failed"
grep -q "4 runs: 4 completed" "$WORK/report.txt" || fail "report: $(cat "$WORK/report.txt")"
[[ -s $OUT/report/runs.csv ]] || fail "no runs.csv"
log "OK: 4 runs in 3 array tasks, one log per task, report written"

# 8. More runs than MaxArraySize (4, set in slurm.conf above): ilr reads the cap with scontrol, writes
#    an array of 4 tasks, each training a shard, and says so.
cat >"$WORK/big.toml" <<'SPEC'
[sweep]
name = "slurm-ci-cap"
[base]
data = { augment = false, synthetic = { train = 128, test = 32, size = 8 } }
model = { depth = 8, width = 0.25 }
optim = { lr = 0.2, momentum = 0.0 }
train = { steps = 40, batch_size = 16, stats_every = 5, eval_every = 20, device = "cpu" }
[grid]
"optim.lambda_e" = [1.6e-2, 8e-3, 4e-3]
seed = [0, 1]
SPEC
BIG=$WORK/big
"$ILR" sweep "$WORK/big.toml" --out "$BIG" --slurm --cpus-per-task 1 --partition debug 2>"$WORK/big.err" >/dev/null \
    || fail "ilr sweep --slurm (6 runs): $(cat "$WORK/big.err")"
grep -q "exceed the cluster's MaxArraySize of 4 (scontrol show config)" "$WORK/big.err" \
    || fail "no note on the MaxArraySize cap: $(cat "$WORK/big.err")"
grep -q -- '--array=0-3$' "$BIG/sweep.sbatch" || fail "the array is not capped at 4 tasks: $(grep array "$BIG/sweep.sbatch")"
JOB=$(sbatch --parsable --wait "$BIG/sweep.sbatch") || fail "sbatch --wait reported a failed task (capped array)"
JOB=${JOB%%;*}
runs=$(find "$BIG/runs" -mindepth 2 -maxdepth 2 -name summary.json | wc -l)
[[ $runs == 6 ]] || fail "capped array: expected 6 finished runs, found $runs"
logs=$(find "$BIG/logs" -name "ilr-slurm-ci-cap-${JOB}_*.out" | wc -l)
[[ $logs == 4 ]] || fail "capped array: expected 4 task logs, found $logs"
log "OK: 6 runs in an array capped at MaxArraySize = 4"
echo "slurm-ci: 2 passed, 0 failed"
