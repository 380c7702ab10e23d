//! The checked-in include/regcache.h must be what cbindgen generates from the sources now.
//! `REGCACHE_BLESS=1 cargo test -p regcache-ffi --test header` (ffi/gen-header.sh) rewrites it.

use std::path::Path;

fn generate() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let config = cbindgen::Config::from_file(Path::new(dir).join("cbindgen.toml"))
        .expect("reading cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen failed");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("header is UTF-8")
}

#[test]
fn header_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/regcache.h");
    let fresh = generate();
    if std::env::var_os("REGCACHE_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("writing include/regcache.h");
        return;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current != fresh {
        let first = current
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .map_or(current.lines().count().min(fresh.lines().count()), |i| i);
        panic!(
            "ffi/include/regcache.h is stale (first difference at line {}): run ffi/gen-header.sh \
             and commit the result",
            first + 1
        );
    }
}
