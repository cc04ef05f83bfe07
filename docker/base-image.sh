#!/usr/bin/env bash
# Make the local Debian base image that docker/Dockerfile builds FROM, without any image registry:
# debootstrap a minimal bookworm (with the packages kvmq runs: redis, the workload binaries, QEMU),
# add the Node.js runtime this host runs kvmq with, and import the tree as an image.
#   docker/base-image.sh [TAG]        default tag: kvmq-base:bookworm
# Environment: KVMQ_DEBIAN_MIRROR (default: the first Debian mirror in this host's apt sources),
#              KVMQ_NODE (default: the node on PATH), KVMQ_REBUILD=1 to rebuild an existing tag.
# Needs root, debootstrap and a running Docker engine. Takes about a minute and a half.
set -euo pipefail
tag="${1:-kvmq-base:bookworm}"
suite=bookworm

# What the api, worker and redis services run (gcc and libc6-dev compile the static guest agent; nginx,
# redis-server, wrk and redis-benchmark are the server workloads). Depends are pulled in by debootstrap,
# Recommends are not.
packages=redis-server,redis-tools,sysbench,stress-ng,postmark,busybox-static,qemu-system-x86,cpio,kmod,e2fsprogs,libstdc++6,gcc,libc6-dev,nginx-light,wrk

# The image carries its package list as a label: an image made from an older list is made again, so a
# host that built the base before a workload was added does not run a worker that lacks its binary.
if [ "${KVMQ_REBUILD:-0}" != 1 ] && docker image inspect "$tag" >/dev/null 2>&1; then
  have="$(docker image inspect -f '{{index .Config.Labels "kvmq.packages"}}' "$tag" 2>/dev/null || true)"
  if [ "$have" = "$packages" ]; then
    echo "base-image: $tag exists (KVMQ_REBUILD=1 to rebuild)" >&2
    exit 0
  fi
  echo "base-image: $tag was made from another package list; making it again" >&2
fi
[ "$(id -u)" = 0 ] || { echo "base-image: debootstrap needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "base-image: install debootstrap (apt-get install debootstrap)" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "base-image: the Docker engine is not reachable (is dockerd running?)" >&2; exit 1; }

# The mirror this host already installs from, so the image builds wherever apt works.
mirror="${KVMQ_DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
  mirror="$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)\/\{0,1\}$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)"
fi
if [ -z "$mirror" ]; then
  mirror="$(awk '$1 == "deb" && $2 !~ /^\[/ && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
fi
[ -n "$mirror" ] || { echo "base-image: no Debian mirror found in the apt sources; set KVMQ_DEBIAN_MIRROR" >&2; exit 1; }

node_bin="${KVMQ_NODE:-$(command -v node || true)}"
[ -x "$node_bin" ] || { echo "base-image: no node binary (set KVMQ_NODE)" >&2; exit 1; }
case "$("$node_bin" --version)" in v2[0-9]*|v[3-9][0-9]*) ;; *) echo "base-image: kvmq needs Node.js 20 or newer, $node_bin is $("$node_bin" --version)" >&2; exit 1;; esac

root="$(mktemp -d /var/tmp/kvmq-base.XXXXXX)"
trap 'rm -rf "$root"' EXIT
echo "base-image: debootstrap $suite from $mirror into $root" >&2
debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$root.log" 2>&1 || {
  tail -20 "$root.log" >&2; rm -f "$root.log"; echo "base-image: debootstrap failed" >&2; exit 1; }
rm -f "$root.log"
install -m 0755 "$(readlink -f "$node_bin")" "$root/usr/local/bin/node"
chroot "$root" /usr/local/bin/node --version >/dev/null
# Package caches and lists are dead weight in an image; the mirror stays configured for later apt use.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
echo "base-image: importing as $tag ($(du -sh "$root" | cut -f1))" >&2
tar --numeric-owner -C "$root" -c . | docker import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' -c 'CMD ["/bin/bash"]' \
  -c "LABEL kvmq.packages=$packages" - "$tag" >/dev/null
echo "base-image: $tag ready" >&2
