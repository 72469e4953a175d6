//! looker: generate, push and verify log streams and metric series.
//!
//! The pipeline is split into modules that each own one step:
//! `gen` makes records, `record` defines and parses them, `input` reads
//! them from files or stdin, `batch` groups them into per-series fragments
//! and push messages, `encode` turns messages into request bodies, `sink`
//! delivers them (HTTP with retries, a local file, or nowhere), `schedule`
//! paces them, `manifest` records what the store acknowledged, and `verify`
//! reads the store back and compares it with the manifest.

pub mod batch;
pub mod checksum;
pub mod encode;
pub mod exit;
pub mod gen;
pub mod http;
pub mod input;
pub mod labels;
pub mod manifest;
pub mod metrics;
pub mod proto;
pub mod push;
pub mod record;
pub mod report;
pub mod schedule;
pub mod series;
pub mod sink;
pub mod timefmt;
pub mod verify;
