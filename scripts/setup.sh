#!/usr/bin/env bash
# Install what kvmq needs and is missing, saying what it installs. Safe to run again: it does nothing
# when everything is present. Used by `npm start`, `npm run demo`, `npm test` and CI.
#   --quiet   only speak when installing something
#   --test    also what the test suite needs
#   --bench   also what `npm run bench` needs (wrk, the HTTP load generator)
set -euo pipefail
cd "$(dirname "$0")/.."
quiet=0; test=0; bench=0
for a in "$@"; do case "$a" in --quiet) quiet=1;; --test) test=1;; --bench) bench=1;; esac; done
say() { [ "$quiet" = 1 ] || echo "setup: $*" >&2; }

# command -> Debian package
declare -A need=( [redis-server]=redis-server [sysbench]=sysbench [stress-ng]=stress-ng [postmark]=postmark [busybox]=busybox-static
  [nginx]=nginx-light [wrk]=wrk [redis-benchmark]=redis-tools
  [gcc]=gcc [qemu-system-x86_64]=qemu-system-x86 [cpio]=cpio [depmod]=kmod [mkfs.ext4]=e2fsprogs )
if [ "$test" = 1 ]; then need[jq]=jq; need[curl]=curl; need[chromium]=chromium; need[dockerd]=docker.io; need[debootstrap]=debootstrap; need[docker-compose]=docker-compose; need[promtool]=prometheus; need[redis-sentinel]=redis-sentinel; need[redis-cli]=redis-tools; need[openssl]=openssl; fi
if [ "$bench" = 1 ]; then need[wrk]=wrk; fi
missing=()
for cmd in "${!need[@]}"; do command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}"); done
# The guest agent is compiled static, which needs the C library archive (not pulled in without recommends).
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || missing+=(libc6-dev)
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

# The container tests need a running Docker engine; on a fresh machine nothing starts it, so start it
# here (vfs storage works everywhere, including inside another container).
if [ "$test" = 1 ] && ! docker info >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: starting dockerd (log in /tmp/kvmq-dockerd.log)" >&2
    setsid dockerd --storage-driver=vfs >/tmp/kvmq-dockerd.log 2>&1 < /dev/null &
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { echo "setup: dockerd did not start; see /tmp/kvmq-dockerd.log" >&2; exit 1; }
  else
    echo "setup: the Docker engine is not running and starting it needs root" >&2
    exit 1
  fi
fi

# npm packages: install when node_modules is missing or older than the lock file.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm packages (npm ci)" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
else
  say "npm packages present"
fi

# The compiled build that bin/kvmq.js runs (dist/), made again only when a source is newer than it.
node scripts/build.mjs --if-stale
