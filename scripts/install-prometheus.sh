#!/usr/bin/env bash
# Install Debian's Prometheus server for the `prometheus` tests (tests/test_prometheus.py), which start
# their own prometheus on 127.0.0.1. Run as root. A no-op when it is there already.
# The package would start a prometheus service listening on every interface (:9090); services are kept
# from starting during the install (policy-rc.d), so nothing is left listening.
set -euo pipefail
if ! command -v prometheus >/dev/null; then
    policy=/usr/sbin/policy-rc.d
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
fi
prometheus --version 2>&1 | sed -n 1p
