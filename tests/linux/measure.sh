# Sourced by fvtest (a domU's side) and pvio-test (dom0's side) of `cargo xtask bench`'s
# PV I/O figures, so that both sides measure alike.
#
# kbs: KiB/s of a 64 MiB dd with the given operands, timed here (busybox dd prints no
# rate) by the monotonic clock in ns from /proc/timer_list (/proc/uptime's 10 ms would be
# 14 % of dom0's 70 ms read). mbps: iperf3's receiver rate (-f m). rtt_ns: ping's average
# round trip ("round-trip min/avg/max").
now_ns() { awk '/^now at/ { print $3; exit }' /proc/timer_list; }
kbs() {
    t0=$(now_ns)
    if ! dd "$@" bs=1M count=64 2>/tmp/dd.err; then
        echo "dd-error:$(tail -n 1 /tmp/dd.err | tr ' ' _)"
        return
    fi
    t1=$(now_ns)
    awk -v a="$t0" -v b="$t1" 'BEGIN { if (b > a) printf "%d", 65536 * 1e9 / (b - a); else print "no-time" }'
}
mbps() { awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") v = $(i - 1) } END { print v }'; }
rtt_ns() { awk -F/ '/round-trip/ { printf "%d", $4 * 1000000 }'; }
