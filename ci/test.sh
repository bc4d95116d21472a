#!/usr/bin/env bash
# The whole test suite: installs what it needs, builds, runs every test, and
# checks that no DPDK process left files behind. Debian 12, as root.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/deps.sh

before=$(ls /var/run/dpdk 2>/dev/null | sort || true)
start=$(date +%s)

# One build, in the test profile: every crate, test, example and bench
# (benches run once each in test mode, as a smoke check).
echo "== build (workspace, all targets, test profile)"
cargo test --workspace --all-targets --locked --no-run 2>&1 | tail -n 3

echo "== tests"
cargo test --workspace --all-targets --locked --no-fail-fast

echo "== leftovers"
after=$(ls /var/run/dpdk 2>/dev/null | sort || true)
new=$(comm -13 <(echo "$before") <(echo "$after") | grep -E '^(bulkhead|bh)' || true)
if [ -n "$new" ]; then
    echo "FAIL: DPDK runtime directories left behind under /var/run/dpdk: $new" >&2
    exit 1
fi
echo "== all tests passed in $(( $(date +%s) - start )) s"
