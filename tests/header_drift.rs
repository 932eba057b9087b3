//! The committed `include/kvzch.h` must be exactly what the pinned cbindgen
//! generates from `src/ffi`; refresh it with `KVZCH_BLESS_HEADER=1 cargo build`.

#[test]
fn committed_header_matches_the_generated_one() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/kvzch.h"));
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/kvzch.h"))
            .expect("include/kvzch.h is committed");
    assert!(
        generated == committed,
        "include/kvzch.h is stale: run `KVZCH_BLESS_HEADER=1 cargo build` and commit the result"
    );
}
