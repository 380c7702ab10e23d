#!/bin/sh
# Inside the guest: bring up two Soft-RoCE devices over a veth pair, then
# run the given command.  rxe0 = veth0 = 10.9.0.1, rxe1 = veth1 = 10.9.0.2.
#   vmtest/run.sh --kernel 6.12 -- vmtest/guest-rxe.sh ibv_devices
# rxe drops packets routed through lo, so each direction is forced out of
# its veth by policy routing (for locally sent packets only: iif lo, so
# that arriving packets are still delivered locally) and the "local" rule
# is moved after those rules.
set -e
modprobe rdma_rxe
# Lossless, like the PFC fabric RoCE is deployed on: a veth hands every packet to the other
# end through the receiving CPU's backlog, whose default 1,000 packets a large RDMA READ's
# responses overflow; the go-back-N retransmission that follows can stall 6.1's rxe for good
# (docs/bench-rdma.md). 16,384 holds four of the largest (4 MiB) transfers. RXE_BACKLOG=1000
# brings the loss back.
sysctl -qw net.core.netdev_max_backlog="${RXE_BACKLOG:-16384}"
ip link set lo up
ip link add veth0 type veth peer name veth1
ip addr add 10.9.0.1/24 dev veth0
ip addr add 10.9.0.2/24 dev veth1
ip link set veth0 up
ip link set veth1 up
for k in all default veth0 veth1; do
	sysctl -qw net.ipv4.conf.$k.accept_local=1 net.ipv4.conf.$k.rp_filter=0
done
ip rule add from 10.9.0.1 to 10.9.0.2 iif lo table 100 pref 100
ip route add 10.9.0.2 dev veth0 table 100
ip rule add from 10.9.0.2 to 10.9.0.1 iif lo table 101 pref 101
ip route add 10.9.0.1 dev veth1 table 101
ip rule add pref 1000 table local
ip rule del pref 0 table local
rdma link add rxe0 type rxe netdev veth0
rdma link add rxe1 type rxe netdev veth1
set +e
exec "$@"
