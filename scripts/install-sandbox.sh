#!/usr/bin/env bash
# Install what the sandbox service needs on Debian/Ubuntu (bubblewrap; prlimit and setpriv come with
# util-linux). Run as root. A no-op when everything is there already.
set -euo pipefail
missing=()
command -v bwrap >/dev/null || missing+=(bubblewrap)
command -v prlimit >/dev/null && command -v setpriv >/dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
bwrap --version
