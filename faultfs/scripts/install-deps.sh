#!/usr/bin/env bash
# What ringkv-faultfs needs at run time, installed when missing (Debian/Ubuntu, apt).
#
# - /dev/fuse: the kernel's FUSE device (module `fuse`). Required.
# - fusermount3 (package `fuse3`): only needed when not running as root; as root, ringkv-faultfs
#   mounts with mount(2) directly. Installed anyway so that unprivileged runs and `fusermount3 -u`
#   work. Building needs nothing: fuser's pure-Rust mount path does not link libfuse.
set -euo pipefail

if [[ ! -e /dev/fuse ]]; then
  if command -v modprobe >/dev/null 2>&1; then
    modprobe fuse || true
  fi
  if [[ ! -e /dev/fuse ]]; then
    echo "install-deps: /dev/fuse is missing and 'modprobe fuse' did not create it;" \
      "the disk-fault nemesis needs FUSE (in a container: --device /dev/fuse --cap-add SYS_ADMIN)" >&2
    exit 1
  fi
fi

if ! command -v fusermount3 >/dev/null 2>&1; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: fusermount3 missing; run as root to install the fuse3 package" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3
fi

echo "install-deps: FUSE ready (/dev/fuse present, $(command -v fusermount3))"
