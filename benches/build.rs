//! Builds the UCX rcache shim when UCX's headers are installed (Debian: libucx-dev), and sets
//! `cfg(has_ucx)` so the benchmarks run UCX side by side. Without the headers (or with
//! `REGCACHE_BENCH_NO_UCX=1`) the UCX benchmarks are skipped with a message.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rustc-check-cfg=cfg(has_ucx)");
    println!("cargo:rerun-if-changed=ucx/ucx_rcache_shim.c");
    println!("cargo:rerun-if-env-changed=REGCACHE_BENCH_NO_UCX");
    println!("cargo:rerun-if-env-changed=UCX_INCLUDE_DIR");

    if std::env::var_os("REGCACHE_BENCH_NO_UCX").is_some_and(|v| v == "1") {
        println!("cargo:warning=REGCACHE_BENCH_NO_UCX=1: UCX rcache benchmarks skipped");
        return;
    }
    let Some(include) = ucx_include_dir() else {
        println!(
            "cargo:warning=ucs/memory/rcache.h not found (apt-get install libucx-dev): \
             UCX rcache benchmarks skipped"
        );
        return;
    };
    println!(
        "cargo:rerun-if-changed={}",
        include.join("ucs/memory/rcache.h").display()
    );

    cc::Build::new()
        .file("ucx/ucx_rcache_shim.c")
        .include(&include)
        .flag_if_supported("-std=gnu11")
        .warnings(true)
        .compile("ucx_rcache_shim");
    println!("cargo:rustc-link-lib=dylib=ucs");
    println!("cargo:rustc-link-lib=dylib=ucm");
    println!("cargo:rustc-cfg=has_ucx");
}

/// `$UCX_INCLUDE_DIR`, pkg-config's `ucx-ucs`, or /usr/include: the first that has rcache.h.
fn ucx_include_dir() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("UCX_INCLUDE_DIR") {
        candidates.push(dir.into());
    }
    if let Ok(out) = std::process::Command::new("pkg-config")
        .args(["--cflags-only-I", "ucx-ucs"])
        .output()
    {
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            candidates.extend(
                text.split_whitespace()
                    .filter_map(|f| f.strip_prefix("-I"))
                    .map(PathBuf::from),
            );
            // pkg-config prints nothing for the default include path.
        }
        // Link search path, if pkg-config knows a non-default one.
        if let Ok(out) = std::process::Command::new("pkg-config")
            .args(["--libs-only-L", "ucx-ucs"])
            .output()
        {
            for dir in String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|f| f.strip_prefix("-L"))
            {
                println!("cargo:rustc-link-search=native={dir}");
            }
        }
    }
    candidates.push("/usr/include".into());
    candidates.push("/usr/local/include".into());
    candidates
        .into_iter()
        .find(|d| Path::new(d).join("ucs/memory/rcache.h").is_file())
}
