#!/usr/bin/env bash
# Stop the localhost SLURM that ci/slurm-up.sh started (by PID file) and wait until the daemons are
# gone; idempotent. Packages and config stay, so the next slurm-up.sh starts in a few seconds.
set -euo pipefail

stop() {  # stop NAME PIDFILE
  local pid
  pid=$(cat "$2" 2>/dev/null || true)
  if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    ! kill -0 "$pid" 2>/dev/null || { echo "slurm-down: $1 ($pid) still running" >&2; exit 1; }
  fi
  # a stale pid file makes slurmctld's prerm run scancel and fail on a later apt-get remove
  rm -f "$2"
}

grep -qxF "# written by puzzle ci/slurm-up.sh" /etc/slurm/slurm.conf 2>/dev/null || {
  echo "slurm-down: no SLURM of ci/slurm-up.sh here; nothing to stop"; exit 0; }

# jobs first (they are this throwaway cluster's), so no job step outlives its slurmd
if [ -s /run/slurmctld.pid ] && scancel --user=root 2>/dev/null; then
  for _ in $(seq 30); do [ -z "$(squeue -h -t R,CG 2>/dev/null)" ] && break; sleep 0.5; done
fi
stop slurmd /run/slurmd.pid
stop slurmctld /run/slurmctld.pid
stop munged /run/munge/munged.pid
