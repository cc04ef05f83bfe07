#!/usr/bin/env bash
# Install what kvmq needs and is missing, saying what it installs. Safe to run again: it does nothing
# when everything is present. Used by `npm start`, `npm run demo`, `npm test` and CI.
#   --quiet   only speak when installing something
#   --test    also what the test suite needs
set -euo pipefail
cd "$(dirname "$0")/.."
quiet=0; test=0
for a in "$@"; do case "$a" in --quiet) quiet=1;; --test) test=1;; esac; done
say() { [ "$quiet" = 1 ] || echo "setup: $*" >&2; }

# command -> Debian package
declare -A need=( [redis-server]=redis-server [sysbench]=sysbench [stress-ng]=stress-ng [postmark]=postmark [busybox]=busybox-static )
if [ "$test" = 1 ]; then need[jq]=jq; need[curl]=curl; need[chromium]=chromium; fi
missing=()
for cmd in "${!need[@]}"; do command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}"); done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine has no package lists yet; an update is needed before the first install.
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  else
    echo "setup: missing Debian packages: ${missing[*]}; install them as root (apt-get install ${missing[*]})" >&2
    exit 1
  fi
else
  say "Debian packages present"
fi

# npm packages: install when node_modules is missing or older than the lock file.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm packages (npm ci)" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
else
  say "npm packages present"
fi
