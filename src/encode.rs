//! Request bodies: Loki push (protobuf + snappy, or JSON, optionally
//! gzipped), Prometheus remote write 1.0 (protobuf + snappy), and NDJSON
//! records for the file sink.
//!
//! Protobuf is written by hand into reused buffers: building prost
//! structs would allocate a String per entry on the hottest path. Tests
//! decode the output with the prost definitions in [`crate::proto`].

use std::io::Write;

use crate::batch::{Batch, Fragment};
use crate::record;

/// How to encode a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    LokiProtobuf,
    LokiJson { gzip: bool },
    RemoteWrite,
    Ndjson,
}

impl Encoding {
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::LokiProtobuf | Encoding::RemoteWrite => "application/x-protobuf",
            Encoding::LokiJson { .. } => "application/json",
            Encoding::Ndjson => "application/x-ndjson",
        }
    }

    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Encoding::LokiProtobuf | Encoding::RemoteWrite => Some("snappy"),
            Encoding::LokiJson { gzip: true } => Some("gzip"),
            _ => None,
        }
    }
}

/// Reusable encoder state.
pub struct Encoder {
    encoding: Encoding,
    raw: Vec<u8>,
    snappy: snap::raw::Encoder,
}

impl Encoder {
    pub fn new(encoding: Encoding) -> Encoder {
        Encoder {
            encoding,
            raw: Vec::with_capacity(1 << 20),
            snappy: snap::raw::Encoder::new(),
        }
    }

    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Encodes a batch into a fresh body.
    pub fn encode(&mut self, batch: &Batch) -> Vec<u8> {
        self.encode_fragments(&batch.fragments)
    }

    /// Encodes fragments as one message into a fresh body.
    pub fn encode_fragments(&mut self, fragments: &[Fragment]) -> Vec<u8> {
        self.raw.clear();
        match self.encoding {
            Encoding::LokiProtobuf => {
                loki_protobuf(&mut self.raw, fragments);
                self.compress_snappy()
            }
            Encoding::RemoteWrite => {
                remote_write(&mut self.raw, fragments);
                self.compress_snappy()
            }
            Encoding::LokiJson { gzip } => {
                loki_json(&mut self.raw, fragments);
                if gzip {
                    let mut gz = flate2::write::GzEncoder::new(
                        Vec::with_capacity(self.raw.len() / 4),
                        flate2::Compression::fast(),
                    );
                    // Writing into a Vec cannot fail.
                    let _ = gz.write_all(&self.raw);
                    gz.finish().unwrap_or_default()
                } else {
                    self.raw.clone()
                }
            }
            Encoding::Ndjson => {
                ndjson(&mut self.raw, fragments);
                self.raw.clone()
            }
        }
    }

    fn compress_snappy(&mut self) -> Vec<u8> {
        let mut out = vec![0u8; snap::raw::max_compress_len(self.raw.len())];
        // Only fails for inputs over 4 GiB, far beyond any message limit.
        let n = self.snappy.compress(&self.raw, &mut out).unwrap_or(0);
        out.truncate(n);
        out
    }
}

/// A snappy-compressed protobuf body (Loki push or remote write) taken
/// apart: its uncompressed bytes and the byte range of each top-level
/// entry (field 1: a stream or a time series, one per fragment, in
/// order), key and length included. None if it is not such a body.
pub fn protobuf_parts(body: &[u8]) -> Option<(Vec<u8>, Vec<std::ops::Range<usize>>)> {
    let raw = snap::raw::Decoder::new().decompress_vec(body).ok()?;
    let mut parts = Vec::new();
    let mut at = 0;
    while at < raw.len() {
        let start = at;
        let (key, n) = read_varint(&raw[at..])?;
        at += n;
        if key != (1 << 3) | 2 {
            return None;
        }
        let (len, n) = read_varint(&raw[at..])?;
        at = (at + n).checked_add(usize::try_from(len).ok()?)?;
        if at > raw.len() {
            return None;
        }
        parts.push(start..at);
    }
    Some((raw, parts))
}

/// A body of some of the entries `protobuf_parts` found: the same message
/// with only those, snappy-compressed.
pub fn protobuf_body(raw: &[u8], parts: &[std::ops::Range<usize>]) -> Option<Vec<u8>> {
    let mut msg = Vec::with_capacity(parts.iter().map(|r| r.len()).sum());
    for r in parts {
        msg.extend_from_slice(raw.get(r.clone())?);
    }
    snap::raw::Encoder::new().compress_vec(&msg).ok()
}

fn read_varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn key(buf: &mut Vec<u8>, field: u32, wire: u32) {
    varint(buf, ((field << 3) | wire) as u64);
}

fn len_field(buf: &mut Vec<u8>, field: u32, len: usize) {
    key(buf, field, 2);
    varint(buf, len as u64);
}

fn bytes_field(buf: &mut Vec<u8>, field: u32, b: &[u8]) {
    len_field(buf, field, b.len());
    buf.extend_from_slice(b);
}

fn bytes_field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn timestamp_len(ts_ns: i64) -> usize {
    let (s, n) = (
        ts_ns.div_euclid(1_000_000_000),
        ts_ns.rem_euclid(1_000_000_000),
    );
    let mut l = 0;
    if s != 0 {
        l += 1 + varint_len(s as u64);
    }
    if n != 0 {
        l += 1 + varint_len(n as u64);
    }
    l
}

fn entry_len(ts_ns: i64, line: &str) -> usize {
    let tl = timestamp_len(ts_ns);
    bytes_field_len(tl)
        + if line.is_empty() {
            0
        } else {
            bytes_field_len(line.len())
        }
}

/// `logproto.PushRequest` with one stream per fragment.
fn loki_protobuf(buf: &mut Vec<u8>, fragments: &[Fragment]) {
    for f in fragments {
        let labels = f.series.selector().as_bytes();
        let entries_len: usize = f
            .lines()
            .map(|(ts, line)| bytes_field_len(entry_len(ts, line)))
            .sum();
        len_field(buf, 1, bytes_field_len(labels.len()) + entries_len);
        bytes_field(buf, 1, labels);
        for (ts, line) in f.lines() {
            len_field(buf, 2, entry_len(ts, line));
            len_field(buf, 1, timestamp_len(ts));
            let (s, n) = (ts.div_euclid(1_000_000_000), ts.rem_euclid(1_000_000_000));
            if s != 0 {
                key(buf, 1, 0);
                varint(buf, s as u64);
            }
            if n != 0 {
                key(buf, 2, 0);
                varint(buf, n as u64);
            }
            if !line.is_empty() {
                bytes_field(buf, 2, line.as_bytes());
            }
        }
    }
}

/// The `labels` fields of a remote-write `TimeSeries`.
pub(crate) fn remote_write_labels(labels: &crate::labels::LabelSet) -> Box<[u8]> {
    let label_len = |n: &str, v: &str| bytes_field_len(n.len()) + bytes_field_len(v.len());
    // Sized exactly: with many series seen once each, growing this buffer
    // was a tenth of push CPU.
    let size = labels
        .pairs()
        .iter()
        .map(|(n, v)| bytes_field_len(label_len(n, v)))
        .sum();
    let mut buf = Vec::with_capacity(size);
    for (n, v) in labels.pairs() {
        len_field(&mut buf, 1, label_len(n, v));
        bytes_field(&mut buf, 1, n.as_bytes());
        bytes_field(&mut buf, 2, v.as_bytes());
    }
    buf.into_boxed_slice()
}

/// `prometheus.WriteRequest` with one TimeSeries per fragment.
fn remote_write(buf: &mut Vec<u8>, fragments: &[Fragment]) {
    for f in fragments {
        let labels = f.series.remote_write_labels();
        let sample_len = |ts: i64, v: f64| {
            (if v.to_bits() != 0 { 9 } else { 0 })
                + if ts != 0 {
                    1 + varint_len(ts as u64)
                } else {
                    0
                }
        };
        let samples_len: usize = f
            .samples()
            .map(|(ts, v)| bytes_field_len(sample_len(ts, v)))
            .sum();
        len_field(buf, 1, labels.len() + samples_len);
        buf.extend_from_slice(labels);
        for (ts, v) in f.samples() {
            len_field(buf, 2, sample_len(ts, v));
            if v.to_bits() != 0 {
                key(buf, 1, 1);
                buf.extend_from_slice(&v.to_le_bytes());
            }
            if ts != 0 {
                key(buf, 2, 0);
                varint(buf, ts as u64);
            }
        }
    }
}

/// Loki's JSON push body; timestamps are strings as Loki requires.
fn loki_json(buf: &mut Vec<u8>, fragments: &[Fragment]) {
    buf.extend_from_slice(b"{\"streams\":[");
    for (i, f) in fragments.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(b"{\"stream\":");
        buf.extend_from_slice(f.series.key.labels_json.as_bytes());
        buf.extend_from_slice(b",\"values\":[");
        for (j, (ts, line)) in f.lines().enumerate() {
            if j > 0 {
                buf.push(b',');
            }
            buf.extend_from_slice(b"[\"");
            buf.extend_from_slice(itoa::Buffer::new().format(ts).as_bytes());
            buf.extend_from_slice(b"\",");
            record::write_json_str(buf, line);
            buf.push(b']');
        }
        buf.extend_from_slice(b"]}");
    }
    buf.extend_from_slice(b"]}");
}

/// Records in the NDJSON format, as the file sink stores them.
fn ndjson(buf: &mut Vec<u8>, fragments: &[Fragment]) {
    for f in fragments {
        let labels = f.series.key.labels_json.as_bytes();
        match &f.entries {
            crate::batch::Entries::Lines { .. } => {
                for (ts, line) in f.lines() {
                    record::write_log_record(buf, labels, ts, line);
                }
            }
            crate::batch::Entries::Values(_) => {
                for (ts, v) in f.samples() {
                    record::write_metric_record(buf, labels, ts, v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchLimits, Batcher, Series};
    use crate::labels::LabelSet;
    use crate::manifest::SeriesKey;
    use crate::proto;
    use crate::record::Mode;
    use prost::Message;
    use std::sync::Arc;
    use std::time::Duration;

    fn batch(mode: Mode, entries: &[(i64, &str, f64)]) -> Batch {
        let labels = LabelSet::new(vec![
            ("__name__".into(), "m".into()),
            ("Z".into(), "q\"x\n".into()),
            ("a".into(), "1".into()),
        ])
        .unwrap();
        let series = Arc::new(Series::new(SeriesKey::new(labels), 0));
        let mut b = Batcher::new(
            mode,
            BatchLimits {
                fragment_size: 1000,
                fragments_per_message: Some(10),
                max_message_bytes: 1 << 20,
                linger: Duration::from_secs(1),
            },
            1,
        );
        let mut out = Vec::new();
        for &(ts, line, v) in entries {
            match mode {
                Mode::Logs => b.push_line(
                    &series,
                    0,
                    ts,
                    line,
                    crate::checksum::log_entry(ts, line.as_bytes()),
                    &mut out,
                ),
                Mode::Metrics => b.push_value(
                    &series,
                    0,
                    ts,
                    v,
                    crate::checksum::metric_sample(ts, v),
                    &mut out,
                ),
            }
        }
        b.flush(&mut out);
        out.pop().unwrap()
    }

    const ENTRIES: &[(i64, &str, f64)] = &[
        (1_700_000_000_000_000_000, "first", 0.0),
        (1_700_000_000_000_000_001, "", -1.5),
        (1_700_000_001_123_456_789, "é \"quoted\"\n", f64::INFINITY),
        (0, "epoch", 1e-300),
    ];

    #[test]
    fn loki_protobuf_decodes_with_prost() {
        let b = batch(Mode::Logs, ENTRIES);
        let body = Encoder::new(Encoding::LokiProtobuf).encode(&b);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let req = proto::PushRequest::decode(raw.as_slice()).unwrap();
        assert_eq!(req.streams.len(), 1);
        assert_eq!(
            req.streams[0].labels,
            r#"{Z="q\"x\n", __name__="m", a="1"}"#
        );
        let got: Vec<(i64, String)> = req.streams[0]
            .entries
            .iter()
            .map(|e| (e.timestamp.unwrap_or_default().to_ns(), e.line.clone()))
            .collect();
        let want: Vec<(i64, String)> = ENTRIES.iter().map(|e| (e.0, e.1.to_string())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn remote_write_decodes_with_prost_and_labels_are_sorted() {
        let b = batch(Mode::Metrics, ENTRIES);
        let body = Encoder::new(Encoding::RemoteWrite).encode(&b);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let req = proto::WriteRequest::decode(raw.as_slice()).unwrap();
        let ts = &req.timeseries[0];
        let names: Vec<&str> = ts.labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["Z", "__name__", "a"]);
        let got: Vec<(i64, f64)> = ts.samples.iter().map(|s| (s.timestamp, s.value)).collect();
        let want: Vec<(i64, f64)> = ENTRIES.iter().map(|e| (e.0, e.2)).collect();
        assert_eq!(got, want);
    }

    /// A refused message is re-sent in parts built from its body: each
    /// part is the same message with only some fragments.
    #[test]
    fn protobuf_bodies_split_into_their_fragments() {
        for (mode, encoding) in [
            (Mode::Logs, Encoding::LokiProtobuf),
            (Mode::Metrics, Encoding::RemoteWrite),
        ] {
            let mut b = batch(mode, ENTRIES);
            let mut more = batch(mode, &ENTRIES[..2]);
            b.fragments.append(&mut more.fragments);
            let body = Encoder::new(encoding).encode(&b);
            let (raw, parts) = protobuf_parts(&body).unwrap();
            assert_eq!(parts.len(), b.fragments.len());
            for (i, part) in parts.iter().enumerate() {
                let alone = protobuf_body(&raw, std::slice::from_ref(part)).unwrap();
                let want = Encoder::new(encoding).encode_fragments(&b.fragments[i..=i]);
                let unsnap = |x: &[u8]| snap::raw::Decoder::new().decompress_vec(x).unwrap();
                assert_eq!(unsnap(&alone), unsnap(&want), "{encoding:?} part {i}");
            }
            assert_eq!(protobuf_body(&raw, &parts).unwrap(), {
                let mut e = Encoder::new(encoding);
                e.encode(&b)
            });
            assert!(protobuf_parts(b"not snappy").is_none());
        }
    }

    #[test]
    fn loki_json_has_string_timestamps_and_gzip_round_trips() {
        let b = batch(Mode::Logs, ENTRIES);
        let body = Encoder::new(Encoding::LokiJson { gzip: true }).encode(&b);
        let mut plain = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(body.as_slice()),
            &mut plain,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        let values = &v["streams"][0]["values"];
        assert_eq!(values[0][0], "1700000000000000000");
        assert_eq!(values[2][1], "é \"quoted\"\n");
        assert_eq!(v["streams"][0]["stream"]["Z"], "q\"x\n");
    }

    #[test]
    fn ndjson_records_parse_back() {
        let b = batch(Mode::Logs, ENTRIES);
        let body = Encoder::new(Encoding::Ndjson).encode(&b);
        let text = String::from_utf8(body).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), ENTRIES.len());
        let r = crate::record::parse_line(lines[2]).unwrap();
        assert_eq!(r.ts, ENTRIES[2].0);
    }
}
