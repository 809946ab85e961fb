# shellcheck shell=bash
# Sourced by the scripts in slurm/: where a cluster keeps its state and how its Ray nodes find each other.
#
# A cluster is named by the job ID of its head job (slurm/streamflow.sbatch). Its state folder, on a
# filesystem every node sees, holds the head's address and the cluster's Ray auth token:
#   ${STREAMFLOW_SLURM_STATE:-$SLURM_SUBMIT_DIR/.streamflow/slurm}/<head job id>/{head,auth_token}

sf_die() {
    echo "streamflow slurm: $*" >&2
    exit 2
}

# sf_state JOB_ID: the state folder of a job's cluster or LLM servers, under the directory that job was
# submitted from (so a worker job submitted from elsewhere still finds its head).
sf_state() {
    local root=${STREAMFLOW_SLURM_STATE:-}
    if [[ -z $root ]]; then
        root=$(scontrol show job "$1" 2>/dev/null | sed -n 's/^ *WorkDir=\(.*\)$/\1/p')
        root=${root:-$SLURM_SUBMIT_DIR}/.streamflow/slurm
    fi
    echo "$root/$1"
}

# sf_use_cluster HEAD_JOB_ID: export the cluster's state folder, Ray port and auth settings.
sf_use_cluster() {
    export SF_CLUSTER=$1
    SF_STATE=$(sf_state "$1")
    export SF_STATE
    # One port block per head job (below Linux's ephemeral range), so jobs sharing a node never collide.
    export SF_RAY_PORT=${STREAMFLOW_RAY_PORT:-$((20000 + ($1 % 1000) * 10))}
    # Token authentication: only processes that can read the state folder can use the cluster.
    export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$SF_STATE/auth_token
}

# sf_new_token: a fresh auth token for a head that is about to start (readable by the job's user only).
sf_new_token() {
    mkdir -p "$SF_STATE" && chmod 700 "$SF_STATE"
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$RAY_AUTH_TOKEN_PATH")
}

# sf_node_ip: the address other nodes reach this one at: the first address of the interface named by
# STREAMFLOW_NODE_IFACE (e.g. ib0), else the first of `hostname -I`. Evaluated on each node.
sf_node_ip() {
    if [[ -n ${STREAMFLOW_NODE_IFACE:-} ]]; then
        ip -4 -o addr show dev "$STREAMFLOW_NODE_IFACE" | awk '{split($4, a, "/"); print a[1]; exit}'
    else
        hostname -I | awk '{print $1}'
    fi
}

# sf_port_open HOST PORT: true when HOST:PORT accepts connections.
sf_port_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# sf_wait_file PATH SECONDS: true once PATH exists and is not empty.
sf_wait_file() {
    local deadline=$((SECONDS + $2))
    while ((SECONDS < deadline)); do
        [[ -s $1 ]] && return 0
        sleep 2
    done
    return 1
}
