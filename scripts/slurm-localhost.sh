#!/usr/bin/env bash
# A real SLURM on this one machine, for trying slurm/ and for the `slurm` tests:
#   scripts/slurm-localhost.sh start [NODES]   munge + slurmctld + NODES slurmd (n1..nN, the cores split
#                                              between them); prints the line to export SLURM_CONF
#   scripts/slurm-localhost.sh stop            stops the daemons and removes every file
# Everything lives under $STREAMFLOW_SLURM_BASE (default /tmp/streamflow-slurm); run as root, after
# scripts/install-slurm.sh. Ports 6817 (controller) and 17001.. (nodes) must be free. No systemd,
# cgroups or accounting database is used (see docs/slurm.md for the pitfalls this avoids).
set -euo pipefail
BASE=${STREAMFLOW_SLURM_BASE:-/tmp/streamflow-slurm}
CONF=$BASE/slurm.conf

stop() {
    for pidfile in "$BASE"/run/*.bg.pid; do
        [[ -f $pidfile ]] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    for _ in $(seq 50); do  # the daemons stop within a second or two; munge must outlive them
        compgen -G "$BASE/run/*.bg.pid" >/dev/null || break
        alive=0
        for pidfile in "$BASE"/run/*.bg.pid; do kill -0 "$(cat "$pidfile")" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.2
    done
    [[ -f $BASE/munge/munged.pid ]] && kill "$(cat "$BASE/munge/munged.pid")" 2>/dev/null || true
    sleep 0.5
    rm -rf "$BASE"
}

start() {
    local nodes=${1:-1} cpus memory i
    cpus=$(nproc)
    memory=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
    if ((nodes < 1 || nodes > cpus)); then
        echo "slurm-localhost: NODES must be 1..$cpus (one core per node at least)" >&2
        exit 2
    fi
    [[ -e $BASE ]] && stop
    mkdir -p "$BASE"/{munge,state,log,run}
    chown munge:munge "$BASE/munge"
    chmod 755 "$BASE/munge"  # munged refuses a socket folder others cannot traverse
    [[ -s /etc/munge/munge.key ]] || runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
    runuser -u munge -- /usr/sbin/munged -F --socket="$BASE/munge/munge.socket.2" \
        --key-file=/etc/munge/munge.key --log-file="$BASE/munge/munged.log" \
        --pid-file="$BASE/munge/munged.pid" --seed-file="$BASE/munge/munged.seed" >"$BASE/log/munged.out" 2>&1 &
    for _ in $(seq 50); do [[ -S $BASE/munge/munge.socket.2 ]] && break; sleep 0.1; done
    cat >"$CONF" <<EOF
ClusterName=streamflow-local
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
AuthType=auth/munge
CredType=cred/munge
# cred_expire=10: a requeued job may start again after ~30 s instead of ~130 s
AuthInfo=socket=$BASE/munge/munge.socket.2,cred_expire=10
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool/%n
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd-%n.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd-%n.log
MailProg=/bin/true
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=300
KillWait=10
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
EOF
    local names=()
    for i in $(seq "$nodes"); do
        echo "NodeName=n$i NodeHostname=localhost NodeAddr=127.0.0.1 Port=$((17000 + i)) CPUs=$((cpus / nodes)) RealMemory=$((memory / nodes)) State=UNKNOWN" >>"$CONF"
        names+=("n$i")
        mkdir -p "$BASE/spool/n$i"
    done
    echo "PartitionName=debug Nodes=$(IFS=,; echo "${names[*]}") Default=YES MaxTime=INFINITE State=UP" >>"$CONF"
    export SLURM_CONF=$CONF
    slurmctld -D -i -f "$CONF" >"$BASE/log/slurmctld.out" 2>&1 &
    echo $! >"$BASE/run/slurmctld.bg.pid"
    for name in "${names[@]}"; do
        slurmd -D -N "$name" -f "$CONF" >"$BASE/log/slurmd-$name.out" 2>&1 &
        echo $! >"$BASE/run/slurmd-$name.bg.pid"
    done
    for _ in $(seq 150); do
        [[ $(sinfo -h -o %T 2>/dev/null | grep -c idle) -ge 1 && $(sinfo -h -N -o %T | grep -cx idle) -eq $nodes ]] && break
        sleep 0.2
    done
    if [[ $(sinfo -h -N -o %T | grep -cx idle) -ne $nodes ]]; then
        echo "slurm-localhost: the nodes did not come up; logs in $BASE/log" >&2
        sinfo -N >&2 || true
        exit 1
    fi
    sinfo -N
    echo "export SLURM_CONF=$CONF"
}

case ${1:-} in
    start) start "${2:-1}" ;;
    stop) stop ;;
    *) echo "usage: $0 start [NODES] | stop" >&2; exit 2 ;;
esac
