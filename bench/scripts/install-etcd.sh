#!/usr/bin/env bash
# Installs the `etcd` server that `ringkv-bench` compares ringkv with: Debian's `etcd-server`
# package (etcd 3.4 on bookworm). Does nothing when `etcd` is already on the PATH.
# Needs root (or sudo) and a reachable Debian package mirror.
set -euo pipefail

if command -v etcd >/dev/null 2>&1; then
    echo "etcd is already installed: $(command -v etcd) ($(etcd --version 2>/dev/null | head -n 1))"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "install-etcd.sh: run as root (or install sudo) to install the etcd-server package" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends etcd-server

# The package starts an etcd service on the default ports where systemd runs; the benchmark
# starts its own members on free ports, so stop that one when it is there.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
    $SUDO systemctl disable --now etcd || true
fi

echo "installed: $(command -v etcd) ($(etcd --version | head -n 1))"
