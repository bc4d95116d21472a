#!/usr/bin/env bash
# Installs what building and testing Bulkhead needs, only where it is missing.
# Debian 12, as root. Safe to run again: it does nothing when all is there.
set -euo pipefail

PKGS=(build-essential pkg-config clang libclang-dev dpdk dpdk-dev libdpdk-dev libpcap-dev python3 iproute2 nfdump
      qemu-system-x86 busybox-static cpio   # the VM test (tests/vm_guest.rs)
      protobuf-compiler etcd-server etcd-client)   # etcd-client's build (protoc); the many-hosts tests
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "ci/deps.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "ci/deps.sh: no Rust toolchain; install Rust >= 1.82 with rustup (https://rustup.rs) and run again" >&2
    exit 1
fi
