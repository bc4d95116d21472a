#!/usr/bin/env bash
# The demo: builds Bulkhead (release), generates traffic between the workloads
# of a sample 3-tier app and PCI zone (examples/policies/), and runs the switch
# in policy mode on virtual ports. Every second it prints rates, verdicts,
# cache hits and the most denied flows with workload names, for DEMO_SECONDS
# (default 15) or until Ctrl-C, then a summary. Flow records go to a JSON-lines
# file it names. Debian 12, as root; installs the Debian packages it needs.
# No hugepages, no NIC.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/deps.sh

echo "== building bulkhead (release)"
cargo build --release --locked --bin bulkhead 2>&1 | tail -n 2
bin=target/release/bulkhead

work=$(mktemp -d /tmp/bulkhead-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
# The demo config names the example policies relative to the repository root.
"$bin" gen-traffic --model examples/policies/model.toml --flows "${DEMO_FLOWS:-8}" --out "$work/traffic.pcap"
sed -e "s|@PCAP@|$work/traffic.pcap|" -e "s|@WORK@|$work|g" examples/demo.toml > "$work/demo.toml"

echo "== running the switch for ${DEMO_SECONDS:-15} s (Ctrl-C stops it sooner)"
# SIGINT after the bounded time: the switch stops forwarding, prints its
# summary, closes its ports and removes its DPDK runtime files.
timeout -s INT "${DEMO_SECONDS:-15}" "$bin" run --config "$work/demo.toml" --stats-period 1 \
    --socket "$work/bulkhead.sock" || [ $? -eq 124 ]
echo "== flow records written: $(wc -l < "$work/flows.jsonl") (first denied one below)"
grep -m1 '"verdict":"deny"' "$work/flows.jsonl" || true
