#!/usr/bin/env bash
# The C tests: compiles every ffi/tests/c/t_*.c (and t_*.cc) against the header and pkg-config
# file of an installed libregcache, runs them, and prints "ok NAME" / "not ok NAME" per test and
# "N passed, M failed" last. Exits non-zero on any failure. Also: the seed scenario's negative
# control, a static link, and the installed layout.
#   ffi/tests/run-c-tests.sh              installs this checkout's library into a temporary
#                                         prefix (ffi/install.sh; respects CARGO_TARGET_DIR)
#   ffi/tests/run-c-tests.sh --installed  no build, no install: regcache as pkg-config finds it
#                                         (e.g. the libregcache-dev and libregcache0 packages),
#                                         the programs finding libregcache.so.0 as installed
#                                         programs do (no LD_LIBRARY_PATH); its header must be
#                                         this checkout's
set -uo pipefail
ffi="$(cd "$(dirname "$0")/.." && pwd)"
src="$ffi/tests/c"
installed=0
case "${1:-}" in
"") ;;
--installed) installed=1 ;;
*) echo "usage: $0 [--installed]" >&2; exit 2 ;;
esac
work="$(mktemp -d /tmp/regcache-ctest.XXXXXX)"
trap 'rm -rf "$work"' EXIT
bin="$work/bin"
mkdir -p "$bin"

if ((installed)); then
    unset LD_LIBRARY_PATH
    runenv=(env)
else
    prefix="$work/prefix"
    if ! "$ffi/install.sh" "$prefix" >"$work/install.log" 2>&1; then
        cat "$work/install.log"
        echo "0 passed, 1 failed"
        exit 1
    fi
    export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
    runenv=(env LD_LIBRARY_PATH="$prefix/lib")
fi
cflags="$(pkg-config --cflags regcache)" || { echo "0 passed, 1 failed"; exit 1; }
libs="$(pkg-config --libs regcache)"
libdir="$(pkg-config --variable=libdir regcache)"
includedir="$(pkg-config --variable=includedir regcache)"
echo "# regcache $(pkg-config --modversion regcache): header in $includedir, library in $libdir"
CC="${CC:-cc}"
CXX="${CXX:-c++}"
warn=(-Wall -Wextra -Werror -g -O1)

passed=0
failed=0
failures=()
ok() { passed=$((passed + 1)); echo "ok $1"; }
ko() { failed=$((failed + 1)); failures+=("$1"); echo "not ok $1"; sed 's/^/#   /' "$work/out" 2>/dev/null; }

# run NAME CMD...: one test, 120 s at most, output shown on failure.
run() {
    local name="$1"
    shift
    if timeout 120 "$@" >"$work/out" 2>&1; then ok "$name"; else ko "$name"; fi
}

# runfn NAME FUNCTION: a test written as a shell function, run in a subshell; it fails by
# calling `die` (not through set -e, which an `if` around the call would switch off).
runfn() {
    local rc
    ("$2") >"$work/out" 2>&1
    rc=$?
    if ((rc == 0)); then ok "$1"; else ko "$1"; fi
}
die() {
    echo "$*"
    exit 1
}

# The installed layout: SONAME, symlinks, header, pkg-config data.
layout() {
    local lib="$libdir"
    [[ -L "$lib/libregcache.so" && -L "$lib/libregcache.so.0" ]] || die "missing .so symlinks"
    [[ -f "$lib/libregcache.a" ]] || die "missing libregcache.a"
    cmp -s "$includedir/regcache.h" "$ffi/include/regcache.h" || die "header differs"
    readelf -d "$lib/libregcache.so" | grep -q 'SONAME.*\[libregcache.so.0\]' ||
        die "SONAME is not libregcache.so.0"
    [[ "$(pkg-config --modversion regcache)" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
        die "pkg-config has no version"
    local extra
    extra="$(nm -D --defined-only "$lib/libregcache.so" | awk '$2 == "T" {print $3}' |
        grep -v '^regcache_')"
    [[ -z "$extra" ]] || die "exported symbols outside regcache_*: $extra"
    local n
    n="$(nm -D --defined-only "$lib/libregcache.so" | awk '$2 == "T"' | wc -l)"
    ((n >= 10)) || die "only $n functions exported"
}
runfn install-layout layout

for f in "$src"/t_*.c "$src"/t_*.cc; do
    name="$(basename "${f%.*}")"
    name="${name#t_}"
    if [[ "$f" == *.cc ]]; then
        compiler=("$CXX" -std=c++11)
    else
        compiler=("$CC" -std=c11)
    fi
    # shellcheck disable=SC2086 # pkg-config output is a list of flags
    if ! "${compiler[@]}" "${warn[@]}" $cflags -o "$bin/$name" "$f" $libs -lpthread \
        >"$work/out" 2>&1; then
        ko "$name (compile)"
        continue
    fi
    # Found through the SONAME symlink: in the prefix with LD_LIBRARY_PATH, installed through
    # ld.so's cache.
    run "$name" "${runenv[@]}" "$bin/$name"
done

# The programs run the library of $libdir (the package's, or the temporary prefix's), nothing
# else: the dynamic loader resolves libregcache.so.0 there.
resolved() {
    local got
    [[ -x "$bin/basic" ]] || die "no basic test binary"
    got="$("${runenv[@]}" ldd "$bin/basic" | awk '$1 == "libregcache.so.0" { print $3 }')"
    echo "libregcache.so.0 => $got"
    [[ -n "$got" && "$(readlink -f "$got")" == "$(readlink -f "$libdir/libregcache.so.0")" ]] ||
        die "expected $libdir/libregcache.so.0"
}
runfn "library resolved in $libdir" resolved

# The seed scenario's negative control: with invalidations ignored, the stale registration
# must be detected by the same test.
if [[ -x "$bin/seed" ]]; then
    run seed-negative-control "${runenv[@]}" "$bin/seed" --negative-control
fi

# Static link: the basic and seed tests against libregcache.a, with no libregcache.so needed.
static() {
    local t
    for t in basic seed; do
        # shellcheck disable=SC2046,SC2086
        "$CC" -std=c11 "${warn[@]}" $cflags -o "$bin/$t-static" "$src/t_$t.c" \
            "$libdir/libregcache.a" \
            $(pkg-config --static --libs-only-other --libs-only-l regcache | sed 's/-lregcache//') \
            -lpthread || die "static link of $t failed"
        if readelf -d "$bin/$t-static" | grep -q 'NEEDED.*libregcache'; then
            die "$t-static needs libregcache.so"
        fi
        "$bin/$t-static" || die "$t-static failed"
    done
}
runfn static-link static

echo
if ((failed)); then
    echo "failed: ${failures[*]}"
fi
echo "$passed passed, $failed failed"
((failed == 0))
