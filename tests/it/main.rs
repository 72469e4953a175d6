//! Integration tests: one test binary (links once) with a module per tool.

#[path = "../support/mod.rs"]
#[allow(dead_code)]
mod support;

mod faults;
mod fixtures;
mod gen;
mod infra;
mod loki_server;
mod ops;
mod push;
mod review;
mod review2;
mod series_lines;
mod tls;
mod util;
mod verify;
