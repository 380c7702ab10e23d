#!/usr/bin/env bash
# Regenerates ffi/include/regcache.h from the crate's sources with cbindgen (pinned through
# Cargo.lock as a dev-dependency). `cargo test` fails while the checked-in header is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
REGCACHE_BLESS=1 cargo test -q -p regcache-ffi --test header
echo "wrote ffi/include/regcache.h"
