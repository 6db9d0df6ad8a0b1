#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for testing profiles/slurm.
#
#   scripts/slurm_localhost.sh start DIR   # config, state and logs in DIR
#   scripts/slurm_localhost.sh stop DIR    # cancels its jobs, stops the daemons
#
# Needs root and Debian's packages (slurmctld slurmd slurm-client munge; bookworm has
# SLURM 22.05); no systemd and no cgroups (proctrack/linuxproc, task/none). munged
# gets its own key and socket, and slurmctld and slurmd run as root with their
# state, spool, logs and pid files in DIR. There is no accounting (no slurmdbd), so
# sacct fails, as on a cluster without accounting. The node is this machine with
# the CPUs and memory `slurmd -C` sees, in one default partition, `debug`. Ports:
# SLURMCTLD_PORT and SLURMD_PORT (defaults 6817 and 6818).
#
# The one file outside DIR is /etc/slurm/slurm.conf, a link to DIR/slurm.conf
# (removed by stop); a machine with a /etc/slurm/slurm.conf of its own is refused.
# SLURM_CONF would not do: the job step of the executor plugin
# (snakemake-executor-plugin-slurm-jobstep 0.6) drops every SLURM_* variable before
# its srun, which then finds a configuration only at the compiled-in path.
set -euo pipefail

SYSTEM_CONF=/etc/slurm/slurm.conf

usage() {
    echo "usage: $0 start|stop DIR" >&2
    exit 2
}

write_conf() {
    local dir=$1 host node
    host=$(hostname -s)
    # The node as slurmd sees it (CPUs, sockets, cores, threads, RealMemory), so that
    # slurmctld accepts its registration; NodeAddr keeps all traffic on loopback.
    node=$(slurmd -C | sed -n "1s/^NodeName=[^ ]*/NodeName=$host NodeAddr=127.0.0.1/p")
    cat >"$dir/slurm.conf" <<EOF
ClusterName=localhost
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
# No cgroups in containers: track job processes through /proc, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# No accounting, as on a cluster without slurmdbd.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# The default MinJobAge (300 s) keeps finished jobs in squeue long enough for the
# executor plugin's squeue status command, which polls at most every 180 s.
MinJobAge=300
ReturnToService=2
SchedulerType=sched/backfill
$node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    local dir=$1
    mkdir -p -m 700 "$dir/munge"
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$dir/munge/munge.key"
    # --force: munged refuses some setups (running as root, a key owned by root)
    # that are fine for a throwaway test cluster.
    munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" \
        --seed-file="$dir/munge/munged.seed"
}

wait_for_idle_node() {
    local dir=$1 state
    for _ in $(seq 60); do
        state=$(sinfo --noheader --format=%t 2>/dev/null || true)
        if [[ $state == idle ]]; then
            return 0
        fi
        sleep 1
    done
    echo "slurm_localhost: the node is not idle after 60 s (sinfo: '${state}'); logs in" \
        "$dir/log:" >&2
    tail -n 20 "$dir"/log/*.log >&2 || true
    return 1
}

link_conf() {
    local dir=$1
    if [[ -e $SYSTEM_CONF || -L $SYSTEM_CONF ]] &&
        [[ $(readlink "$SYSTEM_CONF") != "$dir/slurm.conf" ]]; then
        echo "slurm_localhost: $SYSTEM_CONF exists and is not a link to $dir/slurm.conf;" \
            "a SLURM configuration of this machine, or a link left by a run that was" \
            "never stopped (then remove it)" >&2
        exit 1
    fi
    mkdir -p "$(dirname "$SYSTEM_CONF")"
    ln -sfn "$dir/slurm.conf" "$SYSTEM_CONF"
}

start() {
    local dir
    dir=$(realpath -m "$1")
    for command in munged slurmctld slurmd sinfo sbatch; do
        command -v "$command" >/dev/null || {
            echo "slurm_localhost: $command not found" \
                "(apt-get install slurmctld slurmd slurm-client munge)" >&2
            exit 1
        }
    done
    mkdir -p "$dir/state" "$dir/spool" "$dir/log"
    write_conf "$dir"
    link_conf "$dir"
    start_munge "$dir"
    # -c: a clean start, whatever an earlier run left in DIR.
    slurmctld -c
    slurmd -N "$(hostname -s)"
    if ! wait_for_idle_node "$dir"; then
        stop "$dir"
        exit 1
    fi
    echo "slurm_localhost: node $(hostname -s) idle in partition debug; logs in $dir/log"
}

stop_daemon() {
    local pidfile=$1 pid
    [[ -f $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || return 0
    # Wait up to 20 s, then kill: a stuck daemon must not outlive the test.
    for _ in $(seq 40); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.5
    done
    kill -9 "$pid" 2>/dev/null || true
}

cancel_jobs() {
    # Jobs run under slurmstepd, which outlives slurmd: cancel them while the
    # controller is up, and give their steps up to 20 s to end.
    scancel --user="$(id -un)" 2>/dev/null || return 0
    for _ in $(seq 40); do
        [[ -z $(squeue --noheader --states=PENDING,RUNNING,COMPLETING 2>/dev/null) ]] && return 0
        sleep 0.5
    done
}

stop() {
    local dir
    dir=$(realpath -m "$1")
    cancel_jobs
    # slurmd first, so that it does not log a lost controller; munged last, as
    # both daemons authenticate through it while shutting down.
    stop_daemon "$dir/slurmd.pid"
    stop_daemon "$dir/slurmctld.pid"
    stop_daemon "$dir/munge/munged.pid"
    if [[ $(readlink "$SYSTEM_CONF" || true) == "$dir/slurm.conf" ]]; then
        rm "$SYSTEM_CONF"
    fi
}

[[ $# == 2 ]] || usage
case $1 in
start) start "$2" ;;
stop) stop "$2" ;;
*) usage ;;
esac
