//! Where connections are accepted.

pub mod admin;
pub mod public;
