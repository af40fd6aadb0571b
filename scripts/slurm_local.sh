#!/usr/bin/env bash
# A single-node SLURM cluster on localhost, to try `launcher=slurm` (and to test it: `make
# test-slurm`) without a real cluster. Debian/Ubuntu, as root (the daemons run as root).
#
#   scripts/slurm_local.sh start     # install the packages if missing, start munged + slurmctld
#                                    # + slurmd, wait until the node is idle, print the env file
#   source "${SLURM_LOCAL_DIR:-/tmp/spectrum-slurm}/env.sh"   # SLURM_CONF and PATH for clients
#   scripts/slurm_local.sh status    # the daemons, sinfo and squeue
#   scripts/slurm_local.sh stop      # cancel the jobs, stop the three daemons it started
#
# Everything lives under $SLURM_LOCAL_DIR (default /tmp/spectrum-slurm): slurm.conf, munge key and
# socket, state, spool, logs, pid files. Nothing under /etc is changed; `stop` ends only the
# daemons whose pid files are there (and the jobs of this cluster, with scancel).
#
# Partitions: `low` (the default; PriorityTier=1, pre-emptible: PreemptMode=REQUEUE, GraceTime=30)
# and `high` (PriorityTier=10). A job in `high` that needs the node pre-empts a job in `low`:
# SLURM sends the job's --signal (submitit's USR2, `preempt_send_user_signal`), submitit
# checkpoints and requeues it, and the requeued job resumes (resume=auto) once the node is free.
#
# sacct: there is no slurmdbd (no database). submitit asks `sacct -o JobID,State,NodeList
# --parsable2 -j ID ...` for job states; $SLURM_LOCAL_DIR/bin/sacct (first on PATH in env.sh)
# answers that one query from `scontrol show job -o`, which keeps a finished job for MinJobAge
# (600 s). It prints only those three columns, whatever -o asks for.
#
# Measured facts behind the settings: ../shared/notes/slurm-local.md (no cgroups here:
# proctrack/linuxproc, task/none; munge's socket directory must be 0755; cred_expire is also how
# long a requeued job waits before it may start again).
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/spectrum-slurm}
CONF=$DIR/etc/slurm.conf
MUNGE_SOCKET=$DIR/munge/run/munge.socket.2
PACKAGES=(slurmctld slurmd slurm-client munge)
START_TIMEOUT_S=${SLURM_LOCAL_START_TIMEOUT_S:-60}

say() { echo "slurm_local: $*" >&2; }
die() { say "$*"; exit 1; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_packages() {
    local missing=()
    for bin in slurmctld slurmd sbatch munged; do
        command -v "$bin" >/dev/null || missing+=("$bin")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}: run as root to apt-get install ${PACKAGES[*]}"
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install ${PACKAGES[*]}"
    say "installing ${PACKAGES[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >"$DIR/apt.log" 2>&1 || die "apt-get update failed (see $DIR/apt.log)"
    apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >>"$DIR/apt.log" 2>&1 \
        || die "apt-get install ${PACKAGES[*]} failed (see $DIR/apt.log)"
}

write_configs() {
    local host node_line cpus sockets cores threads mem
    host=$(hostname -s)
    node_line=$(slurmd -C | head -1)
    cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$node_line")
    sockets=$(sed -n 's/.*SocketsPerBoard=\([0-9]*\).*/\1/p' <<<"$node_line")
    cores=$(sed -n 's/.*CoresPerSocket=\([0-9]*\).*/\1/p' <<<"$node_line")
    threads=$(sed -n 's/.*ThreadsPerCore=\([0-9]*\).*/\1/p' <<<"$node_line")
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")
    mem=$(( mem > 8192 ? mem - 1024 : mem * 3 / 4 ))  # under what slurmd finds: never drained
    mkdir -p "$DIR"/{etc,bin,state,spool,log,run} "$DIR/munge/run"
    : >"$DIR/etc/plugstack.conf"
    cat >"$CONF" <<EOF
# written by scripts/slurm_local.sh (single node, localhost, no cgroups, no accounting database)
ClusterName=spectrum-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=${SLURM_LOCAL_PORT:-6817}
SlurmdPort=$(( ${SLURM_LOCAL_PORT:-6817} + 1 ))
PlugStackConfig=$DIR/etc/plugstack.conf
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
ReturnToService=2
JobRequeue=1
MinJobAge=600
KillWait=5
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem State=UNKNOWN
PartitionName=low Nodes=$host Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=30
PartitionName=high Nodes=$host MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
EOF
    cat >"$DIR/bin/sacct" <<'EOF'
#!/usr/bin/env bash
# sacct stand-in written by scripts/slurm_local.sh (this cluster has no slurmdbd): answers
# submitit's `sacct -o JobID,State,NodeList --parsable2 -j ID [-j ID ...]` from
# `scontrol show job -o` (finished jobs stay there for MinJobAge). Prints those three columns only.
ids=()
while [ $# -gt 0 ]; do
    case "$1" in
        -j|--jobs) ids+=(${2//,/ }); shift 2 ;;
        --jobs=*) v=${1#--jobs=}; ids+=(${v//,/ }); shift ;;
        -o|--format) shift 2 ;;
        *) shift ;;
    esac
done
echo "JobID|State|NodeList"
for id in "${ids[@]}"; do
    scontrol show job -o "$id" 2>/dev/null | awk '{
        delete f
        for (i = 1; i <= NF; i++) { n = index($i, "="); if (n) f[substr($i, 1, n - 1)] = substr($i, n + 1) }
        if (!("JobId" in f)) next
        id = f["JobId"]
        if (("ArrayJobId" in f) && ("ArrayTaskId" in f)) {
            task = f["ArrayTaskId"]
            if (task ~ /[-,]/) task = "[" task "]"
            id = f["ArrayJobId"] "_" task
        }
        nodes = f["NodeList"]; if (nodes == "(null)") nodes = "None assigned"
        print id "|" f["JobState"] "|" nodes
    }'
done
EOF
    chmod +x "$DIR/bin/sacct"
    cat >"$DIR/env.sh" <<EOF
# source this file to use the local cluster (scripts/slurm_local.sh)
export SLURM_CONF=$CONF
export PATH=$DIR/bin:\$PATH
EOF
}

start_munge() {
    pid_alive "$DIR/munge/munged.pid" && return 0
    local key=$DIR/munge/munge.key
    if [ ! -s "$key" ]; then
        dd if=/dev/urandom of="$key" bs=1 count=128 status=none
    fi
    chown munge:munge "$key" "$DIR/munge" 2>/dev/null || true
    chmod 0400 "$key"
    chmod 0755 "$DIR/munge/run"  # munged refuses a 0700 socket directory
    munged --force --key-file="$key" --socket="$MUNGE_SOCKET" --pid-file="$DIR/munge/munged.pid" \
        --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" \
        || die "munged did not start (see $DIR/log/munged.log)"
    munge -S "$MUNGE_SOCKET" -n | unmunge -S "$MUNGE_SOCKET" >/dev/null \
        || die "munge -n | unmunge failed (see $DIR/log/munged.log)"
}

node_state() { SLURM_CONF=$CONF sinfo -h -N -o %T 2>/dev/null | head -1; }

start() {
    local t0=$SECONDS
    mkdir -p "$DIR"
    install_packages
    if pid_alive "$DIR/run/slurmctld.pid" && pid_alive "$DIR/run/slurmd.pid"; then
        say "already running (SLURM_CONF=$CONF)"
    else
        write_configs
        start_munge
        export SLURM_CONF=$CONF
        pid_alive "$DIR/run/slurmctld.pid" || slurmctld -i \
            || die "slurmctld did not start (see $DIR/log/slurmctld.log)"
        pid_alive "$DIR/run/slurmd.pid" || slurmd \
            || die "slurmd did not start (see $DIR/log/slurmd.log)"
    fi
    local state=""
    for _ in $(seq $((START_TIMEOUT_S * 5))); do
        state=$(node_state)
        case "$state" in idle|mixed|allocated) break ;; esac
        sleep 0.2
    done
    case "$state" in
        idle|mixed|allocated) ;;
        *) die "the node is '${state:-not answering}' after ${START_TIMEOUT_S}s (see $DIR/log/)" ;;
    esac
    say "up in $((SECONDS - t0)) s: node $(hostname -s) $state, partitions low (default, pre-emptible) and high"
    say "use it with: source $DIR/env.sh"
    echo "$DIR/env.sh"
}

stop_pid() {  # stop_pid NAME PIDFILE: TERM, wait up to 10 s, then KILL
    local name=$1 file=$2 pid
    [ -f "$file" ] || return 0
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && { say "$name ($pid) ignored TERM: KILL"; kill -9 "$pid" || true; }
    fi
    rm -f "$file"
}

stop() {
    if pid_alive "$DIR/run/slurmctld.pid"; then
        export SLURM_CONF=$CONF
        scancel --full --quiet --user=root 2>/dev/null || true  # this cluster's jobs only
        for _ in $(seq 50); do
            [ -z "$(squeue -h -t RUNNING,COMPLETING,CONFIGURING -o %i 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
    stop_pid slurmd "$DIR/run/slurmd.pid"
    stop_pid slurmctld "$DIR/run/slurmctld.pid"
    stop_pid munged "$DIR/munge/munged.pid"
    rm -rf "$DIR/state" "$DIR/spool"  # a fresh cluster next time (job ids restart at 1)
    say "stopped (logs kept in $DIR/log)"
}

status() {
    local up=0 name file
    for name in munged slurmctld slurmd; do
        file=$DIR/run/$name.pid; [ "$name" = munged ] && file=$DIR/munge/munged.pid
        if pid_alive "$file"; then echo "$name: running (pid $(cat "$file"))"; up=$((up + 1))
        else echo "$name: stopped"; fi
    done
    if [ "$up" -eq 3 ]; then
        SLURM_CONF=$CONF sinfo
        SLURM_CONF=$CONF squeue
        return 0
    fi
    return 3
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status   (state under \$SLURM_LOCAL_DIR, default /tmp/spectrum-slurm)" >&2; exit 2 ;;
esac
