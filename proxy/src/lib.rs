//! probegate: the health-check-aware edge proxy.
#![forbid(unsafe_code)]

pub mod classify;
pub mod config;
pub mod detect;
pub mod forward;
pub mod listeners;
pub mod metrics;
pub mod protocols;
pub mod runtime;
pub mod server;
pub mod shutdown;
pub mod status;
pub mod upstream;
