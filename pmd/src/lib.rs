//! Safe DPDK layer: EAL, mempools, mbufs, ports, queues, poll loops, forwarding engines.
