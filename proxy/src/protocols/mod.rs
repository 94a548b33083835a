//! The wire protocols probegate speaks or recognises on its public port.

pub mod http_health;
pub mod http_once;
pub mod proxy_header;
pub mod replay;
pub mod thrift;
