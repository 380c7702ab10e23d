#!/usr/bin/env bash
# A/B of two builds by the thread's CPU time (profile-hit, profile-miss): alternating rounds
# (base, new, base, new...), then the median over rounds of each figure and of each ratio taken
# inside one round (regcache vs UCX, 10^6 vs 10^5 entries). CPU time leaves out the time a
# thread waits for a CPU, the bulk of the noise on a shared 2-CPU machine.
#
#   benches/ab-cpu.sh BASE_BIN_DIR NEW_BIN_DIR [ROUNDS]   (default 5 rounds, ~1 minute each)
#
# Each directory holds profile-hit and profile-miss (e.g. $CARGO_TARGET_DIR/release). To build
# an older commit's, export it (git archive COMMIT | tar -x -C DIR), copy this tree's
# benches/src/lib.rs and benches/src/bin/profile-{hit,miss}.rs over it (they print the CPU
# time) and `cargo build --release -p regcache-benches --bins` there.
set -euo pipefail
base="${1:?usage: $0 BASE_BIN_DIR NEW_BIN_DIR [ROUNDS]}"
new="${2:?usage: $0 BASE_BIN_DIR NEW_BIN_DIR [ROUNDS]}"
rounds="${3:-5}"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
cpu() { awk '{print $(NF-1)}'; } # the "N ns/op-cpu" figure
for round in $(seq 1 "$rounds"); do
    for b in base new; do
        dir="$base"
        [[ $b == new ]] && dir="$new"
        for n in 1 1000 100000 1000000; do
            for impl in regcache ucx; do
                it=3000000
                ((n >= 100000)) && it=2000000
                echo "$round $b hit-$impl-$n $("$dir/profile-hit" "$impl" "$n" "$it" | cpu)" >>"$out"
            done
        done
        for m in evict ucx-evict; do
            echo "$round $b miss-$m $("$dir/profile-miss" "$m" 1000000 | cpu)" >>"$out"
        done
        echo "$round $b drain-1 $("$dir/profile-miss" drain 1 3000 | cpu)" >>"$out"
        echo "$round $b drain-100 $("$dir/profile-miss" drain 100 300 | cpu)" >>"$out"
        echo "$round $b drain-10000 $("$dir/profile-miss" drain 10000 10 | cpu)" >>"$out"
    done
done
python3 - "$out" <<'EOF'
import collections, statistics, sys
d = collections.defaultdict(lambda: collections.defaultdict(dict))
for line in open(sys.argv[1]):
    r, b, k, v = line.split()
    d[b][k][r] = float(v)
print('thread CPU time, ns per op (drain: per event); median of the rounds\n')
print('| what | base | new | new / base |')
print('|---|---:|---:|---:|')
for k in d['new']:
    a, n = statistics.median(d['base'][k].values()), statistics.median(d['new'][k].values())
    print(f'| {k} | {a:.1f} | {n:.1f} | {n / a:.2f} |')
print('\nratios inside one round: median [min, max] over the rounds\n')
pairs = [('miss-evict', 'miss-ucx-evict')]
pairs += [(f'hit-ucx-{n}', f'hit-regcache-{n}') for n in (1, 1000, 100000, 1000000)]
pairs += [('hit-regcache-1000000', 'hit-regcache-100000')]
for x, y in pairs:
    for b in ('base', 'new'):
        rs = [d[b][x][r] / d[b][y][r] for r in d[b][x] if r in d[b][y]]
        print(f'{b:4} {x} / {y}: {statistics.median(rs):.2f} [{min(rs):.2f}, {max(rs):.2f}]')
EOF
