//! Where connections are accepted.

pub mod accept;
pub mod admin;
pub mod public;
