//! probegate: the health-check-aware edge proxy.
#![forbid(unsafe_code)]

pub mod config;
pub mod protocols;
