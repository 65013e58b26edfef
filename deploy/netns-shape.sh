#!/usr/bin/env bash
# Kernel-level link shaping for agents: each agent runs in its own network namespace,
# joined to the host by a veth pair whose two ends are rate-limited with htb (and, where
# the kernel has sch_netem, delayed and lossy). An alternative to `cleave netem` when the
# shaping should happen below TCP (real packet loss, real queues). Needs root.
#
#   deploy/netns-shape.sh check
#   deploy/netns-shape.sh up NAME INDEX RATE [DELAY [LOSS]]   e.g. up a1 1 2mbit 40ms 1%
#   deploy/netns-shape.sh exec NAME COMMAND...                 e.g. exec a1 cleave agent --broker 10.77.1.1:1883
#   deploy/netns-shape.sh down NAME
#
# Addresses: the host end is 10.77.INDEX.1, the namespace end 10.77.INDEX.2 (INDEX 1-254).
# The broker must listen on the host end (or 0.0.0.0). RATE applies to both directions.
# Not every kernel has sch_netem (this project's CI VM does not): `check` says which
# qdiscs work, and `up` applies the rate alone, with a warning, when netem is missing.
set -euo pipefail

usage() {
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: $1 needs root (network namespaces and qdiscs)" >&2
        exit 1
    fi
}

# Whether the kernel accepts a qdisc kind, tried on a throwaway veth pair.
qdisc_works() {
    local kind=$1 device=cvshape-probe
    ip link add "$device" type veth peer name cvshape-peer 2>/dev/null || return 1
    local status=0
    case $kind in
        htb) tc qdisc add dev "$device" root handle 1: htb default 10 2>/dev/null || status=1 ;;
        tbf) tc qdisc add dev "$device" root tbf rate 1mbit burst 32kbit latency 100ms 2>/dev/null || status=1 ;;
        netem) tc qdisc add dev "$device" root netem delay 1ms 2>/dev/null || status=1 ;;
    esac
    ip link del "$device" 2>/dev/null || true
    return $status
}

check() {
    need_root check
    command -v ip >/dev/null || { echo "ip (iproute2) is missing: sudo apt-get install iproute2"; exit 1; }
    command -v tc >/dev/null || { echo "tc (iproute2) is missing: sudo apt-get install iproute2"; exit 1; }
    ip netns add cvshape-check 2>/dev/null && ip netns del cvshape-check && echo "network namespaces: yes" || echo "network namespaces: NO"
    for kind in htb tbf netem; do
        if qdisc_works "$kind"; then echo "qdisc $kind: yes"; else echo "qdisc $kind: NO"; fi
    done
}

# Rate (and delay/loss when netem exists) on the egress of one veth end.
shape() {
    local device=$1 rate=$2 delay=$3 loss=$4 run=${5:-}
    $run tc qdisc replace dev "$device" root handle 1: htb default 10
    $run tc class add dev "$device" parent 1: classid 1:10 htb rate "$rate" ceil "$rate"
    if [ -n "$delay$loss" ]; then
        local args=()
        [ -n "$delay" ] && args+=(delay "$delay")
        [ -n "$loss" ] && args+=(loss "$loss")
        if ! $run tc qdisc add dev "$device" parent 1:10 handle 10: netem "${args[@]}" 2>/dev/null; then
            echo "warning: sch_netem is not available in this kernel: ${args[*]} not applied on $device (rate only; use cleave netem for delay and loss)" >&2
        fi
    fi
}

up() {
    need_root up
    [ $# -ge 3 ] || usage
    local name=$1 index=$2 rate=$3 delay=${4:-} loss=${5:-}
    [[ $index =~ ^[0-9]+$ ]] && [ "$index" -ge 1 ] && [ "$index" -le 254 ] || { echo "error: INDEX must be 1-254, not '$index'" >&2; exit 2; }
    local ns=cleave-$name host=cv-$name-h peer=cv-$name-n
    [ ${#host} -le 15 ] || { echo "error: NAME '$name' is too long for an interface name (at most 10 characters)" >&2; exit 2; }
    ip netns add "$ns"
    ip link add "$host" type veth peer name "$peer"
    ip link set "$peer" netns "$ns"
    ip addr add "10.77.$index.1/24" dev "$host"
    ip link set "$host" up
    ip netns exec "$ns" ip addr add "10.77.$index.2/24" dev "$peer"
    ip netns exec "$ns" ip link set "$peer" up
    ip netns exec "$ns" ip link set lo up
    shape "$host" "$rate" "$delay" "$loss"
    shape "$peer" "$rate" "$delay" "$loss" "ip netns exec $ns"
    echo "namespace $ns: 10.77.$index.2, host end 10.77.$index.1 ($host), $rate each way${delay:+, delay $delay}${loss:+, loss $loss}"
}

down() {
    need_root down
    [ $# -eq 1 ] || usage
    ip link del "cv-$1-h" 2>/dev/null || true
    ip netns del "cleave-$1" 2>/dev/null || true
    echo "removed cleave-$1"
}

run_in() {
    need_root exec
    [ $# -ge 2 ] || usage
    local name=$1
    shift
    exec ip netns exec "cleave-$name" "$@"
}

case ${1:-} in
    check) check ;;
    up) shift; up "$@" ;;
    down) shift; down "$@" ;;
    exec) shift; run_in "$@" ;;
    *) usage ;;
esac
