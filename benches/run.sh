#!/usr/bin/env bash
# Runs the regcache criterion benchmarks side by side with UCX's rcache, then prints the
# tables of docs/benchmarks.md (medians and ratios).
#
#   benches/run.sh            quick mode (CI): ~1 s per benchmark, < 3 minutes with the build
#   benches/run.sh full       criterion's defaults (3 s warm-up, 5 s, 100 samples): ~5 minutes
#   benches/run.sh quick hit  extra arguments are criterion filters (regexes on the ids)
#
# Environment: CARGO_TARGET_DIR (default /work/target-bench if /work exists, else target),
# REGCACHE_BENCH_NO_UCX=1 to skip UCX, SKIP_APT=1 to not touch apt.
set -euo pipefail

mode="${1:-quick}"
[[ $# -gt 0 ]] && shift
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
if [[ -z "${CARGO_TARGET_DIR:-}" ]]; then
    if [[ -d /work ]]; then export CARGO_TARGET_DIR=/work/target-bench; else export CARGO_TARGET_DIR="$root/target"; fi
fi

# libucx-dev, idempotently (root or sudo; skipped when the header is already there).
if [[ "${REGCACHE_BENCH_NO_UCX:-0}" != 1 && "${SKIP_APT:-0}" != 1 && ! -f /usr/include/ucs/memory/rcache.h ]]; then
    SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    if command -v apt-get >/dev/null; then
        $SUDO apt-get update -qq || true
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libucx-dev >/dev/null ||
            echo "run.sh: libucx-dev could not be installed; UCX benchmarks will be skipped" >&2
    else
        echo "run.sh: no apt-get; UCX benchmarks will be skipped unless UCX_INCLUDE_DIR is set" >&2
    fi
fi

case "$mode" in
    quick)
        export REGCACHE_BENCH_QUICK=1
        crit=(--warm-up-time 0.3 --measurement-time 1 --sample-size 20 --noplot)
        ;;
    full)
        crit=(--noplot)
        ;;
    *)
        echo "usage: $0 [quick|full] [criterion filter...]" >&2
        exit 2
        ;;
esac

cd "$root"
# Fresh results only: the report reads <target>/criterion/*/new.
rm -rf "$CARGO_TARGET_DIR/criterion"
cargo bench -p regcache-benches --bench cache -- "${crit[@]}" "$@"
cargo run -q --release -p regcache-benches --bin bench-report -- "$CARGO_TARGET_DIR/criterion"
# The ratio rows again in paired rounds (each round times both sides back to back): on a host
# whose speed changes within seconds, the figures of record (docs/benchmarks.md).
cargo run -q --release -p regcache-benches --bin bench-paired
echo
echo "Memory per cached entry (mallinfo2, heap growth while filling / N):"
echo
cargo run -q --release -p regcache-benches --bin bench-memory
echo
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
