#!/bin/bash
# Runs inside one guest the checks listed in FILE, one after another, so that a suite of short
# checks pays for one boot, not one each (~10 s of emulation a boot). A line of FILE:
#   NAME [VAR=VALUE...] -- COMMAND [ARGS...]
# (words split by the shell; no quoting inside a word). Prints "ok NAME (N s)" or
# "not ok NAME (exit R)" after each command's own output (and the same line to
# $VMTEST_OUT/results, which the host counts: a command may print lines of its own that start
# with "ok"), and "N passed, M failed" last; exits 1 if any failed. The host counts a guest
# that died, timed out or logged a kernel warning as a failure of its own (run.sh's exit
# status), and a check with no line as a failed one.
#   vmtest/guest-checks.sh FILE     (a path, or a name in $VMTEST_OUT: the host's /tmp is not
#                                    the guest's, run.sh's --out directory is shared)
set -u
list=$1
[ -e "$list" ] || list=${VMTEST_OUT:-}/$1
pass=0 fail=0
result() {
	echo "$1"
	[ -n "${VMTEST_OUT:-}" ] && echo "$1" >>"$VMTEST_OUT/results"
}
while read -r -a words; do
	[ ${#words[@]} -eq 0 ] && continue
	name=${words[0]}
	vars=()
	i=1
	while [ $i -lt ${#words[@]} ] && [ "${words[$i]}" != -- ]; do
		vars+=("${words[$i]}")
		i=$((i + 1))
	done
	cmd=("${words[@]:$((i + 1))}")
	t0=$(date +%s)
	# stdin from /dev/null: the commands must not eat the rest of FILE.
	env "${vars[@]+"${vars[@]}"}" "${cmd[@]}" </dev/null
	rc=$?
	if [ $rc = 0 ]; then
		result "ok $name ($(($(date +%s) - t0)) s)"
		pass=$((pass + 1))
	else
		result "not ok $name (exit $rc)"
		fail=$((fail + 1))
	fi
done <"$list"
echo "$pass passed, $fail failed"
[ $fail = 0 ]
