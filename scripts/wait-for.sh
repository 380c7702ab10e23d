# Sourced by test scripts (bash): wait_for SECONDS CMD [ARGS...] runs CMD every half second
# until it succeeds (returns 0) or SECONDS have passed (returns 1). Every wait stays bounded.
wait_for() {
	local deadline=$(($(date +%s) + $1))
	shift
	until "$@"; do
		[ "$(date +%s)" -lt "$deadline" ] || return 1
		sleep 0.5
	done
}
