#!/usr/bin/env bash
# Install Debian's SLURM (controller, node daemon, client) and munge, for the `slurm` tests and
# scripts/slurm-localhost.sh. Run as root. A no-op when everything is there already. On a machine
# with systemd the packages may start their own daemons; stop them before slurm-localhost.sh.
set -euo pipefail
missing=()
for tool in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if ((${#missing[@]})); then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
slurmctld -V
