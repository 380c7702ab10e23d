//! Gives libregcache.so its SONAME (libregcache.so.0, the ABI major version), so programs linked
//! against the installed library record the versioned name, as the install step lays it out.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libregcache.so.0");
    println!("cargo:rerun-if-changed=build.rs");
}
