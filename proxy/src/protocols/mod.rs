//! The wire protocols probegate speaks or recognises on its public port.

pub mod thrift;
