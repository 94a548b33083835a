//! The Uploader Thrift contract as Rust types, clients and processors.
//!
//! `generated/uploader.rs` is produced from `idl/uploader.thrift` by Debian's
//! `thrift-compiler` 0.17 through `idl/generate.sh` and checked in, so that a
//! build needs only the Rust toolchain; CI regenerates it and fails on drift.
//! The generated file does not pass clippy, hence the blanket `allow`.

#![forbid(unsafe_code)]

#[allow(clippy::all, clippy::pedantic, dead_code, unused, unused_extern_crates)]
#[rustfmt::skip]
#[path = "generated/uploader.rs"]
mod generated;

pub use generated::*;

/// Names of the service's methods, as they appear in a Thrift message header.
/// Proxies use this list to keep metric labels bounded.
pub const METHOD_NAMES: &[&str] = &["ping", "upload", "touch"];
