//! Test support for the end-to-end tests: the real `uploader` and
//! `probegate` binaries on `127.0.0.1:0`, real clients, and a fake OSS.
//!
//! Every test file under `tests/tests/` is its own crate that uses this
//! library. Nothing here mocks the code under test: servers are the built
//! binaries, clients are the `thrift` crate and Apache Thrift's Python
//! library, HTTP is hyper.
//!
//! # Layout
//!
//! - [`binaries`]: where `uploader` and `probegate` are (next to the test
//!   executable; run `cargo test --workspace` or `cargo build --workspace`).
//! - [`process`]: a server child process — config file, stderr log, the
//!   `listening` line, `sigterm()`, `wait_exit()`, kill on drop, log tail on
//!   panic.
//! - [`servers`]: [`Uploader`] and [`Probegate`] on top of it.
//! - [`config`]: TOML built by key path; [`UploaderConfig`] and
//!   [`ProbegateConfig`] with listeners on `127.0.0.1:0`.
//! - [`client`]: a Thrift client in any flavour, with typed errors.
//! - [`python`]: the Python Apache Thrift client as a subprocess.
//! - [`http`]: blocking one-shot HTTP/1.1 requests.
//! - [`net`]: connecting from a chosen loopback source, closing with RST.
//! - [`metrics`]: scraping `/metrics` (`metric(admin, "name{l=\"v\"}")`).
//! - [`wait`]: polling with a deadline (`wait_until`), never fixed sleeps.
//! - [`images`]: real PNG/JPEG/GIF/WebP bytes and exact-size PNGs.
//! - [`tools`]: `require_tool` — skip locally, fail under `CI=true`.
//! - [`fake_oss`]: an OSS endpoint that checks V1 signatures.
//! - [`tempdir`]: per-test scratch directories.
//!
//! # Example
//!
//! ```no_run
//! use e2e::{images, ThriftClient, Uploader, UploaderConfig};
//!
//! let backend = Uploader::start(UploaderConfig::new().workers(2));
//! let mut client = ThriftClient::connect(backend.thrift_addr()).unwrap();
//! let result = client.upload(images::PNG, Some("a.png"), None).unwrap();
//! let fetched = e2e::http::get_url(&result.url).unwrap();
//! assert_eq!(fetched.body.as_ref(), images::PNG);
//! ```

#![forbid(unsafe_code)]

pub mod binaries;
pub mod client;
pub mod config;
pub mod fake_oss;
pub mod http;
pub mod images;
pub mod metrics;
pub mod net;
pub mod process;
pub mod python;
pub mod servers;
pub mod tempdir;
pub mod tools;
pub mod wait;

pub use binaries::binary;
pub use client::{CallError, ThriftClient};
pub use config::{ProbegateConfig, Protocol, TomlConfig, Transport, UploaderConfig};
pub use fake_oss::FakeOss;
pub use metrics::{metric, Metrics};
pub use process::ServerProcess;
pub use servers::{probegate_in_front, Probegate, Uploader};
pub use tempdir::TempDir;
pub use tools::{require_tool, Tool};
pub use wait::{poll_until, wait_until, within};

/// The error codes of `UploadError`, re-exported from the IDL crate.
pub use uploader_idl::{
    ERROR_CONTENT_TYPE_MISMATCH, ERROR_EMPTY, ERROR_INTEGRITY, ERROR_INVALID_IMAGE,
    ERROR_STORAGE_UNAVAILABLE, ERROR_TOO_LARGE,
};
