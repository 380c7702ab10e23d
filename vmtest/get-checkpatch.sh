#!/bin/sh
# Prints the path of the kernel's scripts/checkpatch.pl, extracting it once
# from Debian's linux-source-6.12 package (153 MB download, not installed).
#   make -C kmod checkpatch CHECKPATCH="perl $(vmtest/get-checkpatch.sh)"
set -eu
DIR=${CHECKPATCH_DIR:-/tmp/regcache-checkpatch}
CP=$(ls "$DIR"/linux-source-*/scripts/checkpatch.pl 2>/dev/null | head -n1 || true)
if [ -z "$CP" ]; then
	mkdir -p "$DIR"
	cd "$DIR"
	apt-get download linux-source-6.12 >&2
	dpkg-deb --fsys-tarfile linux-source-6.12_*.deb |
		tar -xO --wildcards '*/linux-source-6.12.tar.xz' |
		tar -xJ --wildcards '*/scripts/checkpatch.pl' '*/scripts/spelling.txt' \
			'*/scripts/const_structs.checkpatch'
	rm -f linux-source-6.12_*.deb
	CP=$(ls "$DIR"/linux-source-*/scripts/checkpatch.pl | head -n1)
fi
echo "$CP"
