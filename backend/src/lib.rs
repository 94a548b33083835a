//! uploader: the fixed-thread Thrift image-upload service and its client.
//!
//! A client sends image bytes over Thrift; the service checks that they are
//! an image, stores them under a content-addressed key through Apache OpenDAL
//! (a local directory or Aliyun OSS) and returns the object's URL. The server
//! is a thread-per-connection Thrift server with a fixed pool, the model of
//! the service in `INCIDENT.md`, with the read timeouts and metrics it lacked.
//!
//! # Layout
//!
//! - [`config`]: the TOML file, typed and validated before anything binds.
//! - [`pool`]: the accept loop and the fixed worker pool.
//! - [`connection`]: one connection's life, its transports and how it ended.
//! - [`framed`]: the framed read transport with a configurable frame cap.
//! - [`handler`]: `ping`, `upload`, `touch`.
//! - [`image`], [`key`]: type detection and content-addressed keys.
//! - [`storage`]: OpenDAL fs / OSS with timeouts, retries and integrity checks.
//! - [`admin`]: `/metrics`, `/live`, `/ready`, `/objects/<key>`.
//! - [`metrics`]: the Prometheus families.
//! - [`server`]: `run`, wiring it all together until shutdown.
//! - [`client`], [`cli`]: the Rust client and the `upload`/`ping` commands.
//! - [`flavor`]: transport + protocol, shared by server and client.
//! - [`thrift_error`]: error text that keeps the `thrift` crate's messages.
//! - [`malloc`]: the allocator settings that keep upload buffers for reuse.
//!
//! No unsafe code, except the one `mallopt` call in [`malloc`] (its SAFETY
//! note says why it is sound).
#![deny(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod client;
pub mod config;
pub mod connection;
pub mod flavor;
pub mod framed;
pub mod framed_write;
pub mod handler;
pub mod image;
pub mod key;
pub mod malloc;
pub mod metrics;
pub mod pool;
pub mod server;
pub mod storage;
pub mod thrift_error;
