#!/usr/bin/env bash
# Bring up a one-node SLURM "cluster" on localhost from Debian packages, for CI and local tests of
# `snakemake --profile slurm`. Debian 12, root, no systemd (daemons are started directly).
# Idempotent: installs only what is missing, starts only daemons that are not running.
# Fakes 2 GPUs (gres gpu:a100:2) so GPU requests are really scheduled; jobs still run on the CPU.
# Stop it with ci/slurm-down.sh. Never run this on a real cluster: it owns /etc/slurm/slurm.conf.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

[ "$(id -u)" = 0 ] || { echo "slurm-up: must run as root" >&2; exit 1; }
MARK="# written by puzzle ci/slurm-up.sh"
if [ -e /etc/slurm/slurm.conf ] && ! grep -qxF "$MARK" /etc/slurm/slurm.conf; then
  echo "slurm-up: /etc/slurm/slurm.conf exists and is not ours; refusing to touch a real SLURM" >&2
  exit 1
fi

PKGS=(slurmctld slurmd slurm-client munge)
n_installed=$(dpkg-query -W -f='${Status}\n' "${PKGS[@]}" 2>/dev/null | grep -c '^install ok installed$' || true)
if [ "$n_installed" != "${#PKGS[@]}" ]; then
  apt-get update -qq
  # postinst scripts cannot start services without systemd ("policy-rc.d denied"); harmless
  apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null
fi

# munge authenticates every SLURM message; the Debian postinst already made the key
[ -s /etc/munge/munge.key ] || /usr/sbin/mungekey --create --force
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 755 /run/munge
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
munge -n | unmunge >/dev/null

# gres/gpu needs File= to be a character device, else slurmd drops the GPUs and the node goes
# INVALID; /dev/null's numbers (c 1 3) make harmless stand-ins
for i in 0 1; do [ -e /dev/fakegpu$i ] || mknod -m 666 /dev/fakegpu$i c 1 3; done

CPUS=$(nproc)
# leave headroom below the real memory, else slurmd registers less and the node drains ("Low RealMemory")
MEM_MB=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 - 2048 ))

mkdir -p /etc/slurm
cat > /etc/slurm/slurm.conf <<CONF
$MARK
ClusterName=localcluster
SlurmctldHost=localhost
AuthType=auth/munge
CredType=cred/munge
SlurmUser=slurm
SlurmdUser=root
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# no cgroups needed (or reliably available) on a CI VM
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without a default, a job that passes no --mem is given the whole node and blocks all others
DefMemPerCPU=1000
ReturnToService=2
MpiDefault=none
# no slurmdbd: the CI profile polls with squeue (profiles/slurm-ci/config.yaml)
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
# finished jobs stay visible to 'squeue --states=all' this long; the plugin's squeue polling
# needs MinJobAge >= 3 x slurm-init-seconds-before-status-checks
MinJobAge=300
KillWait=5
Waittime=0
# writes the environment a job sees into its SLURM log, the CI's proof of the GPU allocation
TaskProlog=/etc/slurm/task-prolog.sh
GresTypes=gpu
NodeName=localhost CPUs=${CPUS} RealMemory=${MEM_MB} Gres=gpu:a100:2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost MaxTime=INFINITE State=UP
CONF
cat > /etc/slurm/gres.conf <<CONF
$MARK
AutoDetect=off
NodeName=localhost Name=gpu Type=a100 File=/dev/fakegpu[0-1]
CONF
# a TaskProlog's "print ..." lines go to the task's standard output, i.e. the job's log file
cat > /etc/slurm/task-prolog.sh <<'PROLOG'
#!/bin/sh
echo "print slurm-task: SLURM_JOB_ID=${SLURM_JOB_ID:-} CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset}"
PROLOG
chmod 755 /etc/slurm/task-prolog.sh

install -d -o slurm -g slurm /var/lib/slurm/slurmctld /var/log/slurm
install -d /var/lib/slurm/slurmd
# both daemonize (stdio to /dev/null, own session), so they never hold a CI job's pipes open
pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
# -N: the node is 'localhost' whatever this machine's hostname is
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd -N localhost

# a node that runs jobs (a second call during a run) is up too
for _ in $(seq 60); do
  state=$(sinfo -h -N -p debug -o '%T' 2>/dev/null || true)
  [[ $state =~ ^(idle|mixed|allocated)$ ]] && break
  sleep 1
done
[[ $state =~ ^(idle|mixed|allocated)$ ]] || {
  echo "slurm-up: node is '${state:-unreachable}' after 60 s" >&2
  tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
  exit 1
}
# end to end: munge, controller, node daemon, job launch
[ "$state" != idle ] || srun -N1 -n1 -t 1 true
sinfo
