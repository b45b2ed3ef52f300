#!/usr/bin/env bash
# Prove `snakemake --profile slurm` against a real SLURM: bring up the localhost SLURM of
# ci/slurm-up.sh when it is not running, run the micro config's data + parent through sbatch
# (profiles/slurm with the profiles/slurm-ci overlay), and check what came out:
#   1. a job that fails on the cluster is reported with its SLURM log and its rule log;
#   2. the rerun resumes from the artifacts already made (data is not redone);
#   3. the jobs really ran under sbatch, and the GPU job got a GPU (CUDA_VISIBLE_DEVICES) while the
#      CPU job did not; the outputs hold what the micro config asks for;
#   4. a third run has nothing to do.
# Usage: ci/slurm-pipeline.sh [WORKDIR]    (an empty folder; default: a new temporary one, removed on success)
# Run as root (it may install and start SLURM) with the project's venv first on PATH.
# SLURM is left as it was found: daemons this script started are stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

WD=${1:-$(mktemp -d "${TMPDIR:-/tmp}/puzzle-slurm.XXXXXX")}
mkdir -p "$WD"
WD=$(cd "$WD" && pwd)
T0=$SECONDS
say() { echo "[slurm-pipeline +$((SECONDS - T0))s] $*"; }
fail() { echo "[slurm-pipeline] FAILED: $*" >&2; echo "[slurm-pipeline] workdir kept: $WD" >&2; exit 1; }
# the checks below count on a first run that starts from nothing
[ -z "$(ls -A "$WD")" ] || fail "workdir $WD is not empty"

started_slurm=0
cleanup() {
  if [ "$started_slurm" = 1 ]; then bash "$REPO/ci/slurm-down.sh"; fi
}
trap cleanup EXIT

if ! pgrep -x slurmctld >/dev/null; then started_slurm=1; fi
bash ci/slurm-up.sh
say "SLURM up"

# The workflow reads config/config.yaml relative to its working directory; -L: schema.yaml is a link.
cp -rL config "$WD/"
MICRO=$REPO/.test/config/config.yaml
TARGET=parent  # data + parent: one CPU job and one GPU job; bounded time whatever stages follow
# the target goes first: --set-resources takes every word after it
SMK=(python3 -m snakemake "$TARGET" -s "$REPO/workflow/Snakefile" --directory "$WD"
     --profile profiles/slurm --profile profiles/slurm-ci --configfile "$MICRO"
     # parent stays a CPU rule for the embedded default; here it asks for a GPU so that one job
     # really goes through gres (and still trains on CPU: device auto finds no CUDA)
     --set-resources parent:gpu=1)

smk() {  # smk LOG ARGS...: run snakemake with a time limit; on a kill, cancel the run's SLURM jobs
  local log=$1 rc=0
  shift
  # SIGTERM alone does not stop a snakemake that waits on SLURM (it finishes running jobs first)
  timeout -k 30 600 "${SMK[@]}" "$@" >"$log" 2>&1 || rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    local run
    run=$(sed -n 's/^SLURM run ID: //p' "$log" | head -n1)
    [ -z "$run" ] || scancel --name "$run" || true
    tail -n 40 "$log" >&2
    fail "snakemake timed out ($log)"
  fi
  return "$rc"
}

# 1. device=cuda: the parent job fails on the node (no CUDA there); the data job, which does not
#    read `device`, succeeds. No retry: the error is deterministic, a resubmission only costs time.
rc=0
smk "$WD/run1.log" --config device=cuda --retries 0 || rc=$?
[ "$rc" != 0 ] || fail "run 1 should have failed (device=cuda on a node without CUDA)"
jobid=$(sed -n "s/.*SLURM-job '\([0-9]*\)' failed.*/\1/p" "$WD/run1.log" | head -n1)
[ -n "$jobid" ] || { tail -n 40 "$WD/run1.log" >&2; fail "run 1: no 'SLURM-job ... failed' report"; }
slurm_log=$WD/.snakemake/slurm_logs/rule_parent/$jobid.log
grep -qF "log: results/micro/logs/parent.log, $slurm_log" "$WD/run1.log" \
  || fail "run 1: the error report does not name the rule log and $slurm_log"
[ -s "$slurm_log" ] || fail "run 1: $slurm_log is missing"
grep -qi "cuda" "$WD/results/micro/logs/parent.log" \
  || fail "run 1: results/micro/logs/parent.log does not say why the job failed"
say "run 1: SLURM job $jobid failed as intended, reported with $slurm_log"

# 2. The rerun picks up the data made in run 1 and runs the parent only.
smk "$WD/run2.log" || { tail -n 40 "$WD/run2.log" >&2; fail "run 2 failed ($WD/run2.log)"; }
grep -Eq '^parent +1$' "$WD/run2.log" || fail "run 2 did not run the parent"
! grep -Eq '^data +[0-9]+$' "$WD/run2.log" || fail "run 2 redid the data instead of resuming"
say "run 2: resumed, only the parent ran"

# 3. Every job went through sbatch and kept its SLURM log; ci/slurm-up.sh's TaskProlog wrote the
#    environment each job saw into that log.
for rule in data parent; do
  grep -q "Job .* has been submitted with SLURM jobid .*rule_$rule/" "$WD/run1.log" "$WD/run2.log" \
    || fail "no sbatch submission of rule $rule"
  compgen -G "$WD/.snakemake/slurm_logs/rule_$rule/*.log" >/dev/null || fail "no SLURM log of rule $rule"
done
grep -hq 'slurm-task: SLURM_JOB_ID=[0-9]* CUDA_VISIBLE_DEVICES=unset' "$WD"/.snakemake/slurm_logs/rule_data/*.log \
  || fail "the data job (CPU) did not run under SLURM without a GPU"
parent_job=$(sed -n 's/.*submitted with SLURM jobid \([0-9]*\).*rule_parent.*/\1/p' "$WD/run2.log")
grep -q "slurm-task: SLURM_JOB_ID=$parent_job CUDA_VISIBLE_DEVICES=[0-9]" \
  "$WD/.snakemake/slurm_logs/rule_parent/$parent_job.log" \
  || fail "the parent job ($parent_job) did not see CUDA_VISIBLE_DEVICES"
python3 - "$WD/results/micro" <<'EOF' || fail "outputs do not match the micro config"
import json, sys
from pathlib import Path
r = Path(sys.argv[1])
report = json.loads((r / "parent/report.json").read_text())
assert report["steps"] == 40, report["steps"]
meta = json.loads((r / "data/mixed/meta.json").read_text())
assert meta["vocab_size"] == 512, meta["vocab_size"]
assert (r / "parent/config.json").is_file() and (r / "logs/data.log").stat().st_size > 0
EOF
say "outputs checked; CPU job without GPU, GPU job (SLURM $parent_job) saw a GPU"

# 4. Nothing left to do.
smk "$WD/run3.log" || fail "run 3 failed ($WD/run3.log)"
grep -q "Nothing to be done" "$WD/run3.log" || fail "run 3 had work left ($WD/run3.log)"
say "run 3: nothing to be done"

[ -n "${1:-}" ] || rm -rf "$WD"
say "PASSED"
