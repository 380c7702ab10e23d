#!/bin/sh
# Runs the whole ummunotify guest suite (inside the VM, module loaded) and
# prints TAP-like lines and "# N passed, M failed"; the counts also go to
# $VMTEST_OUT/summary.  Usage: run-guest.sh [PROGRAM...]
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$HERE/build
PROGS=${*:-"umn-test umn_abi umn_isolation umn_memory umn_stress umn_fuzz umn_reval umn_ring"}
pass=0
fail=0
tmp=$(mktemp)

result() {	# result ok|not-ok name
	if [ "$1" = ok ]; then
		pass=$((pass + 1))
		echo "ok $((pass + fail)) $2"
	else
		fail=$((fail + 1))
		echo "not ok $((pass + fail)) $2"
	fi
}

for prog in $PROGS; do
	echo "# == $prog"
	start=$(date +%s)
	if [ "$prog" = umn-test ]; then
		if "$BIN/umn-test"; then
			result ok umn_test_2010_program
		else
			result not-ok umn_test_2010_program
		fi
		continue
	fi
	"$BIN/$prog" >"$tmp" 2>&1
	rc=$?
	while IFS= read -r line; do
		case "$line" in
		"ok "*) result ok "$prog.${line#ok * }" ;;
		"not ok "*) result not-ok "$prog.${line#not ok * }" ;;
		"# "*passed*) ;;
		*) echo "$line" ;;
		esac
	done <"$tmp"
	if [ $rc != 0 ] && ! grep -q '^not ok' "$tmp"; then
		result not-ok "$prog.exit_status_$rc"
	fi
	echo "# $prog: $(($(date +%s) - start)) s"
done
rm -f "$tmp"

# Nothing left registered, and the module unloads and reloads cleanly.
# The live count is in debugfs (a module parameter before issue 12).
live=/sys/kernel/debug/ummunotify/live_regions
[ -e "$live" ] || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
[ -e "$live" ] || live=/sys/module/ummunotify/parameters/live_regions
if [ "$(cat "$live")" = 0 ]; then
	result ok no_ranges_left_after_suite
else
	result not-ok no_ranges_left_after_suite
fi
if [ -n "${VMTEST_MODULE:-}" ]; then
	if rmmod ummunotify && [ ! -e /dev/ummunotify ] &&
	   insmod "$VMTEST_MODULE" && [ -c /dev/ummunotify ]; then
		result ok module_unloads_and_reloads
	else
		result not-ok module_unloads_and_reloads
	fi
fi

echo "# $(uname -r): $pass passed, $fail failed"
[ -n "${VMTEST_OUT:-}" ] && echo "$pass $fail" >"$VMTEST_OUT/summary"
[ $fail = 0 ]
