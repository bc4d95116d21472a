#!/usr/bin/env bash
# ovs-dpdk-vhost.sh - OVS-DPDK (Debian openvswitch-switch-dpdk 3.1 / DPDK
# 22.11) as a vhost-user switch between two VM sockets, for `bulkhead bench
# vhost`. No hugepages, one PMD core, nothing but loopback/virtual devices.
#
#   ovs-dpdk-vhost.sh start WORK SOCK0 SOCK1 PMD_CORE MAIN_CORE
#       starts ovsdb-server and ovs-vswitchd under WORK (own rundir, db, logs,
#       DPDK --file-prefix), a netdev bridge with fail-mode=secure and two
#       dpdkvhostuserclient ports (ofport 1 -> SOCK0, ofport 2 -> SOCK1: the
#       frontends own the sockets, OVS connects and reconnects), and one flow
#       per direction: "in_port=1,actions=output:2", "in_port=2,actions=output:1"
#       (what io forwarding does). Prints "ovs pid=<vswitchd pid>
#       pmd_comm=<PMD thread name prefix>" when ready.
#   ovs-dpdk-vhost.sh stats WORK        ofport 2 tx_packets
#   ovs-dpdk-vhost.sh pmd WORK          dpif-netdev/pmd-stats-show (packets
#       received, processing cycles: cumulative, the PMD thread's own count)
#   ovs-dpdk-vhost.sh stop WORK         stops the daemons it started (by pid
#       from their pidfiles) and removes its DPDK runtime directory.
#
# As in ../shared/peers/ovs-dpdk-bench.sh: OVS 3.1 adds --in-memory to the EAL
# arguments unless --legacy-mem is given, and --no-huge needs legacy memory.
set -euo pipefail

VSWITCHD=/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk
MEM_MB=${MEM_MB:-2048}
cmd=${1:?usage: ovs-dpdk-vhost.sh start|stats|stop WORK ...}
WORK=${2:?WORK directory}
export OVS_RUNDIR=$WORK/run OVS_LOGDIR=$WORK/log OVS_DBDIR=$WORK/db OVS_SYSCONFDIR=$WORK/etc
BR=bhvbr
PREFIX_FILE=$WORK/prefix

wait_gone() {  # pid, tenths of a second
    local i
    for ((i = 0; i < $2; i++)); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    return 1
}

stop() {
    local pid
    if [ -s "$OVS_RUNDIR/ovs-vswitchd.pid" ]; then
        pid=$(cat "$OVS_RUNDIR/ovs-vswitchd.pid")
        if kill -0 "$pid" 2>/dev/null; then
            timeout 20 ovs-appctl -t "$OVS_RUNDIR/ovs-vswitchd.ctl" exit --cleanup >/dev/null 2>&1 || true
            wait_gone "$pid" 100 || { kill "$pid" 2>/dev/null || true; wait_gone "$pid" 50 || kill -9 "$pid" 2>/dev/null || true; }
        fi
    fi
    if [ -s "$OVS_RUNDIR/ovsdb-server.pid" ]; then
        pid=$(cat "$OVS_RUNDIR/ovsdb-server.pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait_gone "$pid" 50 || kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    ip link show "$BR" >/dev/null 2>&1 && ip link del "$BR" 2>/dev/null || true
    [ -s "$PREFIX_FILE" ] && rm -rf "/var/run/dpdk/$(cat "$PREFIX_FILE")"
    rm -f "$OVS_RUNDIR"/*.pid "$OVS_RUNDIR"/*.ctl
}

case "$cmd" in
start)
    SOCK0=${3:?SOCK0}
    SOCK1=${4:?SOCK1}
    PMD_CORE=${5:?PMD_CORE}
    MAIN_CORE=${6:?MAIN_CORE}
    if [ ! -x "$VSWITCHD" ] || ! command -v ovsdb-server >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openvswitch-switch-dpdk >/dev/null
    fi
    mkdir -p "$OVS_RUNDIR" "$OVS_LOGDIR" "$OVS_DBDIR" "$OVS_SYSCONFDIR"
    prefix=bhovs$$
    echo "$prefix" >"$PREFIX_FILE"
    trap 'stop' ERR
    rm -f "$OVS_DBDIR/conf.db"
    ovsdb-tool create "$OVS_DBDIR/conf.db" /usr/share/openvswitch/vswitch.ovsschema
    ovsdb-server "$OVS_DBDIR/conf.db" --remote="punix:$OVS_RUNDIR/db.sock" \
        --pidfile="$OVS_RUNDIR/ovsdb-server.pid" --unixctl="$OVS_RUNDIR/ovsdb-server.ctl" \
        --log-file="$OVS_LOGDIR/ovsdb-server.log" --detach -vconsole:off
    ovs-vsctl --no-wait init
    ovs-vsctl --no-wait set Open_vSwitch . other_config:dpdk-init=true \
        "other_config:dpdk-extra=--no-huge --legacy-mem -m $MEM_MB --no-pci --file-prefix=$prefix -l $MAIN_CORE" \
        "other_config:pmd-cpu-mask=$(printf '0x%x' $((1 << PMD_CORE)))"
    "$VSWITCHD" "unix:$OVS_RUNDIR/db.sock" --pidfile="$OVS_RUNDIR/ovs-vswitchd.pid" \
        --unixctl="$OVS_RUNDIR/ovs-vswitchd.ctl" --log-file="$OVS_LOGDIR/ovs-vswitchd.log" \
        --detach -vconsole:off
    for ((i = 0; i < 120; i++)); do
        [ "$(ovs-vsctl get Open_vSwitch . dpdk_initialized 2>/dev/null)" = true ] && break
        sleep 0.5
    done
    if [ "$(ovs-vsctl get Open_vSwitch . dpdk_initialized 2>/dev/null)" != true ]; then
        echo "ovs-dpdk-vhost: DPDK did not initialise; last log lines:" >&2
        tail -n 20 "$OVS_LOGDIR/ovs-vswitchd.log" >&2
        stop
        exit 1
    fi
    ovs-vsctl add-br "$BR" -- set bridge "$BR" datapath_type=netdev fail-mode=secure
    ovs-vsctl add-port "$BR" vhu0 -- set Interface vhu0 type=dpdkvhostuserclient ofport_request=1 "options:vhost-server-path=$SOCK0"
    ovs-vsctl add-port "$BR" vhu1 -- set Interface vhu1 type=dpdkvhostuserclient ofport_request=2 "options:vhost-server-path=$SOCK1"
    ovs-ofctl add-flow "$BR" "in_port=1,actions=output:2"
    ovs-ofctl add-flow "$BR" "in_port=2,actions=output:1"
    trap - ERR
    echo "ovs pid=$(cat "$OVS_RUNDIR/ovs-vswitchd.pid") pmd_comm=$(printf 'pmd-c%02d' "$PMD_CORE")"
    ;;
stats)
    ovs-vsctl get Interface vhu1 statistics:tx_packets
    ;;
pmd)
    ovs-appctl -t "$OVS_RUNDIR/ovs-vswitchd.ctl" dpif-netdev/pmd-stats-show
    ;;
stop)
    stop
    ;;
*)
    echo "usage: ovs-dpdk-vhost.sh start|stats|pmd|stop WORK ..." >&2
    exit 2
    ;;
esac
