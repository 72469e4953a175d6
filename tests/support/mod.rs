//! Test infrastructure: servers and proxies on loopback.

pub mod faultproxy;
pub mod loki;
pub mod servers;
