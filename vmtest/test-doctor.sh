#!/bin/bash
# `regcache doctor` inside the guest, with the ummunotify module loaded and two Soft-RoCE
# devices (guest-rxe.sh): the module and the device must be OK, rxe0 and rxe1 must have an
# ACTIVE port, auto must pick ummunotify, and the exit status must be 0.
# Prints the doctor's output, then "N passed, M failed".
#   vmtest/test-doctor.sh [--kernels "6.1 6.12"]     (default: 6.12)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
kernels="6.12"
if [ "${1:-}" = --kernels ]; then
	kernels=$2
	shift 2
fi
cd "$ROOT"
cargo build --release -q -p regcache-cli || { echo "0 passed, 1 failed"; exit 1; }
cli=$(cargo metadata --format-version 1 --no-deps |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/regcache
[ -x "$cli" ] || { echo "0 passed, 1 failed"; exit 1; }

out=$(mktemp -d /tmp/regcache-doctor.XXXXXX)
trap 'rm -rf "$out"' EXIT
pass=0 fail=0
expect() { # kernel, description, grep -E pattern
	if grep -qE "$3" "$out/output.log"; then
		echo "ok $2.$1"
		pass=$((pass + 1))
	else
		echo "not ok $2.$1 (no line matching: $3)"
		fail=$((fail + 1))
	fi
}
for k in $kernels; do
	"$HERE/run.sh" --quiet --timeout 300 --kernel "$k" --out "$out" -- \
		"$HERE/guest-rxe.sh" "$cli" doctor
	rc=$?
	if [ "$rc" = 0 ]; then
		echo "ok doctor-exit-0.$k"
		pass=$((pass + 1))
	else
		echo "not ok doctor-exit-0.$k (exit $rc)"
		fail=$((fail + 1))
	fi
	expect "$k" module '^OK +ummunotify module: loaded'
	expect "$k" device '^OK +/dev/ummunotify: opens for this user'
	expect "$k" ring '^OK +ummunotify RING: offered'
	expect "$k" uffd '^OK +userfaultfd: usable'
	expect "$k" rxe0 '^OK +RDMA devices: rxe0: port 1 ACTIVE'
	expect "$k" rxe1 '^OK +RDMA devices: rxe1: port 1 ACTIVE'
	expect "$k" io_uring '^OK +io_uring: available'
	expect "$k" numa '^OK +NUMA balancing: .*1 memory node'
	expect "$k" monitor '^OK +monitor: auto picks ummunotify: caching ON'
	expect "$k" verdict '^verdict: caching would be ON$'
	if grep -q '^FAIL' "$out/output.log"; then
		echo "not ok no-fail.$k"
		fail=$((fail + 1))
	else
		echo "ok no-fail.$k"
		pass=$((pass + 1))
	fi
done
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
