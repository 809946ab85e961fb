#!/usr/bin/env bash
# Run one Ray node of a streamflow cluster in the foreground until SIGTERM (called by the sbatch scripts):
#   ray-node.sh head      the head, on port $SF_RAY_PORT of this node
#   ray-node.sh worker    a worker joining the head written in $SF_STATE/head
# CPUs come from SLURM (the job's CPUs on this node), GPUs from CUDA_VISIBLE_DEVICES, which SLURM sets
# for --gres=gpu:N. STREAMFLOW_OBJECT_STORE_BYTES caps Ray's object store (default: 30% of memory).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
: "${SF_STATE:?run from slurm/*.sbatch (sf_use_cluster sets it)}"
node=${SLURMD_NODENAME:-$(hostname -s)}
args=(
    --block
    --disable-usage-stats
    --node-ip-address="$(sf_node_ip)"
    --num-cpus="${SLURM_CPUS_ON_NODE:-$(nproc)}"
    # Ray's session files and logs, private to this job and node (two jobs may share a node); a short
    # path, because Ray's socket paths inside it must stay under 108 characters
    --temp-dir="${STREAMFLOW_RAY_TMP:-/tmp}/sfray-${SLURM_JOB_ID:-0}-$node"
    --dashboard-agent-listen-port=$((SF_RAY_PORT + 2))
)
[[ -n ${STREAMFLOW_OBJECT_STORE_BYTES:-} ]] && args+=(--object-store-memory="$STREAMFLOW_OBJECT_STORE_BYTES")
if [[ ${1:-} == head ]] && python -c "import grpc" 2>/dev/null; then
    args+=(--ray-client-server-port=$((SF_RAY_PORT + 3)))  # with ray[client] installed, instead of the fixed 10001
fi
case ${1:-} in
    head) exec ray start --head --port="$SF_RAY_PORT" --include-dashboard=false --dashboard-port=$((SF_RAY_PORT + 1)) "${args[@]}" ;;
    worker) exec ray start --address="$(cat "$SF_STATE/head")" "${args[@]}" ;;
    *) sf_die "usage: ray-node.sh head|worker" ;;
esac
