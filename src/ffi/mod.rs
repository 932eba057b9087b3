//! The C ABI 1.0: the only place with `extern "C"`, raw pointers and `unsafe`.
//!
//! Every exported function runs its body inside `guard::boundary`, which
//! catches panics (`KVZCH_STATUS_INTERNAL`) and records the thread's last error,
//! and checks every pointer and length before the engine sees a Rust reference.
//! Out-params are written only on success, and the engine validates before it
//! mutates, so a failed call changes nothing. `include/kvzch.h` is generated from
//! this module by cbindgen; the doc comments here are the header's.

// The C names are the ABI.
#![allow(non_camel_case_types)]
// Entry points take raw pointers from C; their contracts are in the header, and
// each dereference is checked and explained where it happens.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

// Declared in the order the header presents them (cbindgen follows it).
mod types;

mod version;

mod cache;

mod stats;

mod plugin;

mod guard;

pub use cache::*;
pub use plugin::*;
pub use stats::*;
pub use types::*;
pub use version::*;
