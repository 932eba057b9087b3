//! Generates the C header from `src/ffi` with the pinned cbindgen and sets the
//! shared library's SONAME.
//!
//! The header is written to `OUT_DIR`; the committed copy in `include/` is
//! compared with it by `tests/header_drift.rs`. `KVZCH_BLESS_HEADER=1 cargo build`
//! refreshes the committed copy after an intended ABI addition.
//!
//! cbindgen reads `src/ffi` alone, from its `mod.rs`: pointed at the crate, it
//! runs `cargo metadata`, which resolves the dev-dependencies as well, so a
//! host's offline or vendored build of the library would need crates that
//! only kvzch's tests and benches use.

use std::env;
use std::path::PathBuf;

fn main() {
    let crate_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));

    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=KVZCH_BLESS_HEADER");
    // The major version is in the SONAME so that a 2.x library never satisfies a 1.x host.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libkvzch.so.1");

    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml is valid");
    let bindings = cbindgen::Builder::new()
        .with_src(crate_dir.join("src/ffi/mod.rs"))
        .with_config(config)
        .generate()
        .expect("cbindgen can read src/ffi");
    let generated = out_dir.join("kvzch.h");
    bindings.write_to_file(&generated);
    if env::var_os("KVZCH_BLESS_HEADER").is_some_and(|bless| bless == "1") {
        std::fs::copy(&generated, crate_dir.join("include/kvzch.h"))
            .expect("include/kvzch.h is writable");
    }
}
