#!/usr/bin/env bash
# The demo: builds Bulkhead (release), generates traffic, and runs the switch on
# virtual ports with live per-port stats every second for DEMO_SECONDS (default
# 15) or until Ctrl-C, then prints the forwarding summary. Debian 12, as root;
# installs the Debian packages it needs. No hugepages, no NIC.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/deps.sh

echo "== building bulkhead (release)"
cargo build --release --locked --bin bulkhead 2>&1 | tail -n 2
bin=target/release/bulkhead

work=$(mktemp -d /tmp/bulkhead-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$bin" gen-traffic --flows "${DEMO_FLOWS:-1000}" --out "$work/traffic.pcap"
sed "s|@PCAP@|$work/traffic.pcap|" examples/demo.toml > "$work/demo.toml"

echo "== running the switch for ${DEMO_SECONDS:-15} s (Ctrl-C stops it sooner)"
# SIGINT after the bounded time: the switch stops forwarding, prints its
# summary, closes its ports and removes its DPDK runtime files.
timeout -s INT "${DEMO_SECONDS:-15}" "$bin" run --config "$work/demo.toml" --stats-period 1 \
    --socket "$work/bulkhead.sock" || [ $? -eq 124 ]
