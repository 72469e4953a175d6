//! The manifest: an NDJSON record of exactly what a store acknowledged.
//!
//! One header line per run, then series, fragment and outcome lines, then a
//! trailer. Before a message is sent, each of its fragments is written with
//! status `pending` (write-ahead); once the store answers, one `outcome`
//! line gives the status of all of them. The last word on a fragment wins,
//! and a fragment left `pending` (the pusher crashed or was killed) reads as
//! `unknown`. So a manifest cut short at any point still never claims data
//! that was not acknowledged, nor hides data that may have reached the
//! store. Manifests of several runs (or machines) merge by concatenation:
//! every fragment is keyed by its run id and sequence number.
//!
//! Paced runs send fragments of one or two entries, so lines are kept
//! short (format version 2): a series' labels are written once, in a
//! `series` line, and fragments refer to it by number; a single outcome
//! line covers a message; fields that repeat another (`checksum12` equal
//! to `checksum`, `last_ts` equal to `first_ts`, the edges of a one-entry
//! fragment) are left out; and a metric fragment of up to
//! `INLINE_SAMPLES` samples lists them instead of their sums. Version 1
//! manifests (a full line per outcome, labels on every line) still load.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::checksum::{Digest, ValueSums};
use crate::labels::LabelSet;
use crate::record::Mode;

pub const FORMAT_VERSION: u32 = 2;

/// Metric fragments of at most this many finite samples carry the samples
/// themselves (exact, and shorter than their `values` sums).
pub const INLINE_SAMPLES: usize = 4;

/// What happened to a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Written before sending; never the final word.
    Pending,
    /// The store acknowledged it (2xx).
    Ok,
    /// The store refused it with a non-retryable answer (4xx). Part of it may
    /// still have been written (Loki accepts valid entries of a 400).
    Rejected,
    /// Given up on, and no attempt can have reached the store.
    Failed,
    /// Given up on or abandoned after an attempt that may have reached the
    /// store (a timeout, a reset, a 5xx).
    Unknown,
}

impl Status {
    /// The name the manifest uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Ok => "ok",
            Status::Rejected => "rejected",
            Status::Failed => "failed",
            Status::Unknown => "unknown",
        }
    }
}

/// NaN samples of a metric fragment: how many, and the fragment's
/// checksums without them, for stores that drop NaN values on ingest
/// (VictoriaMetrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NanInfo {
    pub count: u64,
    pub checksum: u64,
    pub checksum12: u64,
}

/// A fragment as the pusher knows it: enough to check it later without
/// keeping its payload.
#[derive(Debug, Clone)]
pub struct FragmentMeta {
    pub id: u64,
    pub series: Arc<SeriesKey>,
    pub digest: Digest,
    /// Metrics only: the digest with values rounded to 12 significant digits.
    pub digest12: Option<u64>,
    /// Metrics only, when the fragment holds NaN values.
    pub nan: Option<NanInfo>,
    /// Metrics only, when every value is finite.
    pub values: Option<ValueSums>,
    pub first_ts: i64,
    pub last_ts: i64,
    /// Set when all adjacent entries are this far apart; lets the verifier
    /// name exactly which timestamps are missing.
    pub step: Option<i64>,
    pub bytes: u64,
    /// Logs: the entries at `first_ts` and at `last_ts`.
    pub edges: Option<Edges>,
    /// Metrics: the samples themselves, when there are at most
    /// `INLINE_SAMPLES` and all are finite.
    pub samples: Option<Vec<(i64, f64)>>,
}

/// Hashes of a log fragment's entries at its first and at its last
/// timestamp (the same entries when the two are equal). Two cuts of the
/// same input (a re-push with other fragment sizes) may split the entries
/// of one timestamp differently; with these, each fragment can still be
/// confirmed entry by entry where the store keeps each entry once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edges {
    pub first: Vec<u64>,
    pub last: Vec<u64>,
}

/// `Edges` as written in manifests: checksums in hex.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EdgesLine {
    pub first: Vec<String>,
    pub last: Vec<String>,
}

impl EdgesLine {
    #[cfg(test)]
    fn new(e: &Edges) -> EdgesLine {
        let hex = |v: &[u64]| v.iter().map(|h| format!("{h:016x}")).collect();
        EdgesLine {
            first: hex(&e.first),
            last: hex(&e.last),
        }
    }

    fn edges(&self) -> Option<Edges> {
        let parse =
            |v: &[String]| -> Option<Vec<u64>> { v.iter().map(|h| Digest::parse_hex(h)).collect() };
        Some(Edges {
            first: parse(&self.first)?,
            last: parse(&self.last)?,
        })
    }
}

/// A series as written in manifests: labels and their JSON form.
#[derive(Debug)]
pub struct SeriesKey {
    pub labels: LabelSet,
    pub labels_json: String,
    /// The manifest writer that numbered this series, and the number
    /// (writer tag, sid): kept here rather than in a map of the writer,
    /// which would cost a cache miss per fragment and memory per series
    /// ever seen.
    sid: Mutex<Option<(u64, u64)>>,
}

impl PartialEq for SeriesKey {
    fn eq(&self, o: &SeriesKey) -> bool {
        self.labels == o.labels
    }
}

impl Eq for SeriesKey {}

impl std::hash::Hash for SeriesKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.labels.hash(h)
    }
}

impl SeriesKey {
    pub fn new(labels: LabelSet) -> SeriesKey {
        let labels_json = labels.to_json();
        SeriesKey {
            labels,
            labels_json,
            sid: Mutex::new(None),
        }
    }
}

/// The header line of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub kind: String,
    pub version: u32,
    pub run: String,
    pub tool: String,
    pub mode: Mode,
    /// `loki`, `remote-write`, `file` or `null`.
    pub target: String,
    /// Where the data went, with any credentials removed.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub started: String,
    pub hash: String,
}

/// One fragment line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FragmentLine {
    pub kind: String,
    pub run: String,
    pub id: u64,
    pub status: Status,
    /// Version 1: the labels on every line. Version 2: `sid` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<LabelSet>,
    /// The run's `series` line with this number holds the labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<u64>,
    pub count: u64,
    /// In the run's timestamp unit (ns for logs, ms for metrics), as a
    /// string so JSON readers that use doubles keep every digit.
    pub first_ts: String,
    /// Left out when equal to `first_ts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub checksum: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum12: Option<String>,
    /// NaN samples in the fragment, and its checksums without them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nan: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_without_nan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum12_without_nan: Option<String>,
    /// Metrics: timestamp and value sums (NaN left out), for stores
    /// that keep values only to a decimal precision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<ValuesLine>,
    /// Metrics, small fragments: `[ts, value]` pairs, both as strings
    /// (exact in any JSON reader), in place of `values`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<Vec<[String; 2]>>,
    /// Logs: checksums of the entries at `first_ts` and at `last_ts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edges: Option<EdgesLine>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// An attempt may have reached the store before the one that succeeded,
    /// so a store that keeps duplicates may hold this fragment twice.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub maybe_duplicated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A series' labels, written once per run before its first fragment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeriesLine {
    pub kind: String,
    pub run: String,
    pub sid: u64,
    pub labels: LabelSet,
}

/// The store's answer to one message: the status of each fragment listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutcomeLine {
    pub kind: String,
    pub run: String,
    pub ids: Vec<u64>,
    pub status: Status,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub maybe_duplicated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `ValueSums` as written in manifests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValuesLine {
    pub ts: String,
    pub scale: f64,
    /// `ValueSums::sum` in decimal: a 128-bit integer.
    pub sum: String,
    /// Absent in manifests of an earlier development version: then
    /// `count * 4e-12`, the largest per-value allowance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rel: Option<f64>,
    pub inv: f64,
    pub max_abs: f64,
}

impl ValuesLine {
    fn new(v: &ValueSums) -> ValuesLine {
        ValuesLine {
            ts: format!("{:016x}", v.ts),
            scale: v.scale,
            sum: v.sum.to_string(),
            rel: Some(v.rel),
            inv: v.inv,
            max_abs: v.max_abs,
        }
    }

    fn sums(&self, count: u64) -> Option<ValueSums> {
        Some(ValueSums {
            ts: Digest::parse_hex(&self.ts)?,
            scale: self.scale,
            sum: self.sum.parse().ok()?,
            rel: self.rel.unwrap_or(count as f64 * 4e-12),
            inv: self.inv,
            abs: 0.0,
            max_abs: self.max_abs,
        })
    }
}

/// Totals by status.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Totals {
    pub ok: u64,
    pub rejected: u64,
    pub failed: u64,
    pub unknown: u64,
}

impl Totals {
    pub fn add(&mut self, status: Status, n: u64) {
        match status {
            Status::Ok => self.ok += n,
            Status::Rejected => self.rejected += n,
            Status::Failed => self.failed += n,
            Status::Unknown | Status::Pending => self.unknown += n,
        }
    }
}

/// The trailer line of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trailer {
    pub kind: String,
    pub run: String,
    pub fragments: Totals,
    pub entries: Totals,
    pub skipped_lines: u64,
    /// Input entries identical (timestamp and content) to one already
    /// pushed in their series, pushed once.
    #[serde(default)]
    pub duplicates_skipped: u64,
    pub interrupted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_error: Option<String>,
    pub finished: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Parse {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    #[error("{path}: no header line: not a looker manifest")]
    NoHeader { path: PathBuf },
    #[error("manifests mix logs and metrics runs; verify them separately")]
    MixedModes,
}

/// Appends manifest lines; shared by the pusher's concurrent senders.
pub struct ManifestWriter {
    inner: Mutex<WriterState>,
    path: PathBuf,
}

struct WriterState {
    file: File,
    buf: Vec<u8>,
    run: String,
    /// `run` as a JSON string.
    run_json: String,
    fragments: Totals,
    entries: Totals,
    duplicates_skipped: u64,
    /// Tells this writer's series numbers (in `SeriesKey`) from another's.
    tag: u64,
    next_sid: u64,
}

impl WriterState {
    /// The number of `series` in this manifest, appending its `series`
    /// line to the buffer when it has none yet. The same labels in another
    /// `SeriesKey` (a series forgotten and seen again) get another number
    /// and line, which the reader merges.
    fn series_number(&mut self, series: &SeriesKey) -> Result<u64, serde_json::Error> {
        // A panic elsewhere while holding the lock leaves plain data.
        let mut cached = series.sid.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((tag, sid)) = *cached {
            if tag == self.tag {
                return Ok(sid);
            }
        }
        let sid = self.next_sid;
        self.next_sid += 1;
        let line = SeriesLine {
            kind: "series".into(),
            run: self.run.clone(),
            sid,
            labels: series.labels.clone(),
        };
        serde_json::to_writer(&mut self.buf, &line)?;
        self.buf.push(b'\n');
        *cached = Some((self.tag, sid));
        Ok(sid)
    }
}

/// The status and outcome fields of a fragment line.
#[derive(Debug, Clone, Copy)]
struct Outcome<'a> {
    status: Status,
    attempts: u32,
    maybe_duplicated: bool,
    reason: Option<&'a str>,
}

/// A fragment line as the format defines it, through serde: the reference
/// `write_fragment_line` is tested against byte for byte.
#[cfg(test)]
fn fragment_line(run: &str, sid: u64, f: &FragmentMeta, o: Outcome<'_>) -> FragmentLine {
    let hex = |v: u64| format!("{v:016x}");
    FragmentLine {
        kind: "fragment".into(),
        run: run.to_string(),
        id: f.id,
        status: o.status,
        labels: None,
        sid: Some(sid),
        count: f.digest.count,
        first_ts: f.first_ts.to_string(),
        last_ts: (f.last_ts != f.first_ts).then(|| f.last_ts.to_string()),
        step: f.step.map(|s| s.to_string()),
        checksum: f.digest.hex(),
        checksum12: f.digest12.filter(|&c| c != f.digest.sum).map(hex),
        nan: f.nan.map(|n| n.count),
        checksum_without_nan: f.nan.map(|n| hex(n.checksum)),
        checksum12_without_nan: f
            .nan
            .filter(|n| n.checksum12 != n.checksum)
            .map(|n| hex(n.checksum12)),
        values: match &f.samples {
            Some(_) => None,
            None => f.values.as_ref().map(ValuesLine::new),
        },
        samples: f.samples.as_ref().map(|v| {
            v.iter()
                .map(|&(t, x)| [t.to_string(), ryu::Buffer::new().format(x).to_string()])
                .collect()
        }),
        // A one-entry fragment's edges are its checksum.
        edges: f
            .edges
            .as_ref()
            .filter(|_| f.digest.count != 1)
            .map(EdgesLine::new),
        attempts: o.attempts,
        maybe_duplicated: o.maybe_duplicated,
        reason: o.reason.map(str::to_string),
    }
}

fn push_hex16(buf: &mut Vec<u8>, v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for i in (0..16).rev() {
        buf.push(DIGITS[((v >> (i * 4)) & 0xf) as usize]);
    }
}

fn push_int(buf: &mut Vec<u8>, v: impl itoa::Integer) {
    buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// `"name":"<decimal>"`, after a comma.
fn push_str_int(buf: &mut Vec<u8>, name: &str, v: i64) {
    buf.extend_from_slice(b",\"");
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b"\":\"");
    push_int(buf, v);
    buf.push(b'"');
}

/// `"name":"<16 hex digits>"`, after a comma.
fn push_str_hex(buf: &mut Vec<u8>, name: &str, v: u64) {
    buf.extend_from_slice(b",\"");
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b"\":\"");
    push_hex16(buf, v);
    buf.push(b'"');
}

fn push_hex_list(buf: &mut Vec<u8>, v: &[u64]) {
    buf.push(b'[');
    for (i, &h) in v.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.push(b'"');
        push_hex16(buf, h);
        buf.push(b'"');
    }
    buf.push(b']');
}

/// Appends the line `fragment_line` describes, and a newline, without
/// building it: in a paced run a fragment holds one or two entries, and
/// writing its line was the largest cost per entry. `run_json` is the run
/// id as a JSON string.
fn write_fragment_line(
    buf: &mut Vec<u8>,
    run_json: &str,
    sid: u64,
    f: &FragmentMeta,
    o: Outcome<'_>,
) -> Result<(), serde_json::Error> {
    buf.extend_from_slice(b"{\"kind\":\"fragment\",\"run\":");
    buf.extend_from_slice(run_json.as_bytes());
    buf.extend_from_slice(b",\"id\":");
    push_int(buf, f.id);
    buf.extend_from_slice(b",\"status\":\"");
    buf.extend_from_slice(o.status.as_str().as_bytes());
    buf.extend_from_slice(b"\",\"sid\":");
    push_int(buf, sid);
    buf.extend_from_slice(b",\"count\":");
    push_int(buf, f.digest.count);
    push_str_int(buf, "first_ts", f.first_ts);
    if f.last_ts != f.first_ts {
        push_str_int(buf, "last_ts", f.last_ts);
    }
    if let Some(step) = f.step {
        push_str_int(buf, "step", step);
    }
    push_str_hex(buf, "checksum", f.digest.sum);
    if let Some(c) = f.digest12.filter(|&c| c != f.digest.sum) {
        push_str_hex(buf, "checksum12", c);
    }
    if let Some(n) = f.nan {
        buf.extend_from_slice(b",\"nan\":");
        push_int(buf, n.count);
        push_str_hex(buf, "checksum_without_nan", n.checksum);
        if n.checksum12 != n.checksum {
            push_str_hex(buf, "checksum12_without_nan", n.checksum12);
        }
    }
    match (&f.samples, &f.values) {
        (Some(samples), _) => {
            buf.extend_from_slice(b",\"samples\":[");
            let mut r = ryu::Buffer::new();
            for (i, &(t, x)) in samples.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                buf.extend_from_slice(b"[\"");
                push_int(buf, t);
                buf.extend_from_slice(b"\",\"");
                buf.extend_from_slice(r.format(x).as_bytes());
                buf.extend_from_slice(b"\"]");
            }
            buf.push(b']');
        }
        (None, Some(v)) => {
            buf.extend_from_slice(b",\"values\":");
            serde_json::to_writer(&mut *buf, &ValuesLine::new(v))?;
        }
        (None, None) => {}
    }
    if let Some(e) = f.edges.as_ref().filter(|_| f.digest.count != 1) {
        buf.extend_from_slice(b",\"edges\":{\"first\":");
        push_hex_list(buf, &e.first);
        buf.extend_from_slice(b",\"last\":");
        push_hex_list(buf, &e.last);
        buf.push(b'}');
    }
    if o.attempts != 0 {
        buf.extend_from_slice(b",\"attempts\":");
        push_int(buf, o.attempts);
    }
    if o.maybe_duplicated {
        buf.extend_from_slice(b",\"maybe_duplicated\":true");
    }
    if let Some(r) = o.reason {
        buf.extend_from_slice(b",\"reason\":");
        serde_json::to_writer(&mut *buf, r)?;
    }
    buf.extend_from_slice(b"}\n");
    Ok(())
}

impl ManifestWriter {
    /// Opens `path` for appending and writes the header.
    pub fn create(path: &Path, header: &Header) -> Result<ManifestWriter, ManifestError> {
        let io = |source| ManifestError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        // A run killed mid-line left a cut last line: end it, so this run's
        // header starts a line of its own and the cut line reads as cut.
        let len = file.metadata().map_err(io)?.len();
        if len > 0 {
            let mut last = [0u8];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut last, len - 1).map_err(io)?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(io)?;
            }
        }
        let w = ManifestWriter {
            inner: Mutex::new(WriterState {
                file,
                buf: Vec::with_capacity(64 * 1024),
                run: header.run.clone(),
                run_json: serde_json::to_string(&header.run).map_err(|e| io(e.into()))?,
                fragments: Totals::default(),
                entries: Totals::default(),
                duplicates_skipped: 0,
                tag: rand::random(),
                next_sid: 0,
            }),
            path: path.to_path_buf(),
        };
        w.write_json(header)?;
        Ok(w)
    }

    fn write_json<T: Serialize>(&self, v: &T) -> Result<(), ManifestError> {
        let mut st = self.lock();
        st.buf.clear();
        serde_json::to_writer(&mut st.buf, v).map_err(|e| self.io_err(e.into()))?;
        st.buf.push(b'\n');
        let WriterState { file, buf, .. } = &mut *st;
        file.write_all(buf).map_err(|e| self.io_err(e))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WriterState> {
        // A panic elsewhere while holding the lock leaves plain data behind;
        // keep writing rather than lose the manifest. Series numbered in
        // that write may not have their lines in the file: number afresh.
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => {
                let mut g = p.into_inner();
                g.tag = rand::random();
                self.inner.clear_poison();
                g
            }
        }
    }

    fn io_err(&self, source: std::io::Error) -> ManifestError {
        ManifestError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Writes one line per fragment with the given status, in one write
    /// (after a `series` line for each series not yet numbered).
    pub fn record(
        &self,
        fragments: &[FragmentMeta],
        status: Status,
        attempts: u32,
        maybe_duplicated: bool,
        reason: Option<&str>,
    ) -> Result<(), ManifestError> {
        let out = Outcome {
            status,
            attempts,
            maybe_duplicated,
            reason,
        };
        let mut st = self.lock();
        let r = self.record_locked(&mut st, fragments, out);
        if r.is_err() {
            // Series numbered in this write may have no line in the file.
            st.tag = rand::random();
        }
        r
    }

    fn record_locked(
        &self,
        st: &mut WriterState,
        fragments: &[FragmentMeta],
        out: Outcome<'_>,
    ) -> Result<(), ManifestError> {
        let status = out.status;
        st.buf.clear();
        for f in fragments {
            let sid = st
                .series_number(&f.series)
                .map_err(|e| self.io_err(e.into()))?;
            let WriterState { buf, run_json, .. } = &mut *st;
            write_fragment_line(buf, run_json, sid, f, out).map_err(|e| self.io_err(e.into()))?;
            if status != Status::Pending {
                st.fragments.add(status, 1);
                st.entries.add(status, f.digest.count);
            }
        }
        let WriterState { file, buf, .. } = &mut *st;
        file.write_all(buf).map_err(|e| self.io_err(e))
    }

    /// Writes the outcome of fragments already written `pending`: one
    /// line for all of them.
    pub fn record_outcome(
        &self,
        fragments: &[FragmentMeta],
        status: Status,
        attempts: u32,
        maybe_duplicated: bool,
        reason: Option<&str>,
    ) -> Result<(), ManifestError> {
        if fragments.is_empty() {
            return Ok(());
        }
        let mut st = self.lock();
        let line = OutcomeLine {
            kind: "outcome".into(),
            run: st.run.clone(),
            ids: fragments.iter().map(|f| f.id).collect(),
            status,
            attempts,
            maybe_duplicated,
            reason: reason.map(str::to_string),
        };
        st.buf.clear();
        serde_json::to_writer(&mut st.buf, &line).map_err(|e| self.io_err(e.into()))?;
        st.buf.push(b'\n');
        for f in fragments {
            st.fragments.add(status, 1);
            st.entries.add(status, f.digest.count);
        }
        let WriterState { file, buf, .. } = &mut *st;
        file.write_all(buf).map_err(|e| self.io_err(e))
    }

    /// Totals of the outcomes recorded so far: (fragments, entries).
    pub fn totals(&self) -> (Totals, Totals) {
        let st = self.lock();
        (st.fragments.clone(), st.entries.clone())
    }

    /// Sets the count of repeated input entries the trailer reports.
    pub fn set_duplicates_skipped(&self, n: u64) {
        self.lock().duplicates_skipped = n;
    }

    /// Writes the trailer and syncs the file to disk.
    pub fn finish(
        &self,
        skipped_lines: u64,
        interrupted: bool,
        input_error: Option<String>,
    ) -> Result<(), ManifestError> {
        let (fragments, entries) = self.totals();
        let (run, duplicates_skipped) = {
            let st = self.lock();
            (st.run.clone(), st.duplicates_skipped)
        };
        self.write_json(&Trailer {
            kind: "trailer".into(),
            run,
            fragments,
            entries,
            skipped_lines,
            duplicates_skipped,
            interrupted,
            input_error,
            finished: crate::timefmt::format_rfc3339_ns(crate::timefmt::now_ns()),
        })?;
        self.lock().file.sync_all().map_err(|e| self.io_err(e))
    }
}

/// A fragment as read back from manifests, with its final status.
#[derive(Debug, Clone)]
pub struct Fragment {
    pub run: Arc<str>,
    pub id: u64,
    pub status: Status,
    pub count: u64,
    pub first_ts: i64,
    pub last_ts: i64,
    pub step: Option<i64>,
    pub checksum: u64,
    pub checksum12: Option<u64>,
    pub nan: Option<NanInfo>,
    /// Boxed: log fragments, which have none, are kept by the hundred
    /// thousand while verifying.
    pub values: Option<Box<ValueSums>>,
    /// Boxed for the same reason.
    pub edges: Option<Box<Edges>>,
    pub maybe_duplicated: bool,
    pub reason: Option<String>,
    /// Set when consecutive small fragments were read as one (see
    /// `Fragment::absorb`).
    pub merged: Option<Box<Merged>>,
}

/// Small acknowledged fragments of a series read as one: what each was,
/// so the run can be split again (about 80 bytes a part, against a
/// kilobyte for a fragment being verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub parts: Vec<Part>,
}

/// One fragment of a merged run (status ok, acknowledged once). Its
/// times follow from the run's: parts continue one grid, in order. Its
/// `checksum12` counts when the run has one, and its edges are kept only
/// when they are not its checksum (more than one entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub id: u64,
    pub count: u32,
    pub checksum: u64,
    pub checksum12: u64,
    pub edges: Option<Box<Edges>>,
}

impl Part {
    fn of(f: &Fragment) -> Part {
        Part {
            id: f.id,
            // Mergeable fragments hold at most MERGE_FRAGMENTS_UP_TO.
            count: f.count as u32,
            checksum: f.checksum,
            checksum12: f.checksum12.unwrap_or(0),
            edges: f.edges.clone().filter(|_| f.count > 1),
        }
    }
}

/// Fragments of at most this many entries are merged on loading...
pub const MERGE_FRAGMENTS_UP_TO: u64 = 16;
/// ...into runs of at most this many: a default fragment's size, so a
/// finding about a run is no coarser than one about a default push.
pub const MERGED_UP_TO: u64 = 500;

impl Fragment {
    /// The fragments of the manifest this one stands for.
    pub fn parts(&self) -> u64 {
        self.merged.as_ref().map_or(1, |m| m.parts.len() as u64)
    }

    /// (last id, parts) of a merged run.
    pub fn merged_ids(&self) -> Option<(u64, u64)> {
        let m = self.merged.as_ref()?;
        Some((m.parts.last()?.id, m.parts.len() as u64))
    }

    /// A merged run as the fragments it was read from (value sums, which
    /// only stores that round values use, are not kept); else itself.
    pub fn split(self) -> Vec<Fragment> {
        let Some(m) = self.merged else {
            return vec![self];
        };
        // A merged run always has a step: the gap between its parts.
        let step = self.step.unwrap_or(0);
        let mut first_ts = self.first_ts;
        m.parts
            .into_iter()
            .map(|p| {
                let count = u64::from(p.count);
                let last_ts = first_ts + step * (count as i64 - 1);
                let f = Fragment {
                    run: self.run.clone(),
                    id: p.id,
                    status: Status::Ok,
                    count,
                    first_ts,
                    last_ts,
                    step: (count > 1).then_some(step),
                    checksum: p.checksum,
                    checksum12: self.checksum12.map(|_| p.checksum12),
                    nan: None,
                    values: None,
                    edges: match (&self.edges, p.edges) {
                        (None, _) => None,
                        (Some(_), Some(e)) => Some(e),
                        (Some(_), None) => Some(Box::new(Edges {
                            first: vec![p.checksum],
                            last: vec![p.checksum],
                        })),
                    },
                    maybe_duplicated: false,
                    reason: None,
                    merged: None,
                };
                first_ts = last_ts + step;
                f
            })
            .collect()
    }

    /// Whether the fragment may be merged with its neighbours: small,
    /// acknowledged once, and on an exact time grid (its entries `step`
    /// apart, or a single one).
    fn mergeable(&self) -> bool {
        self.count <= MERGE_FRAGMENTS_UP_TO && self.mergeable_run()
    }

    /// Takes `next` (mergeable, of the same series) into this run of
    /// fragments if it continues it: same run, the next entries of the
    /// same time grid, and sums that add up. A paced push makes fragments
    /// of one to three entries; read one by one they cost the verifier
    /// about a kilobyte each. The merged fragment is checked as one: its
    /// checksums are the sums of the parts', and its step still names
    /// every missing timestamp.
    fn absorb(&mut self, next: &Fragment) -> bool {
        if !next.mergeable()
            || !self.mergeable_run()
            || self.run != next.run
            || self.count + next.count > MERGED_UP_TO
        {
            return false;
        }
        let gap = next.first_ts.checked_sub(self.last_ts);
        let step = match (gap, self.step, next.step) {
            (Some(g), a, b)
                if g > 0 && a.map_or(true, |a| a == g) && b.map_or(true, |b| b == g) =>
            {
                g
            }
            _ => return false,
        };
        let checksum12 = match (self.checksum12, next.checksum12) {
            (Some(a), Some(b)) => Some(a.wrapping_add(b)),
            (None, None) => None,
            _ => return false,
        };
        // Value sums of different scales do not add up; they only serve
        // stores that round values, for which nothing is merged.
        let values = match (&self.values, &next.values) {
            (Some(a), Some(b)) => a.merged(b).map(Box::new),
            _ => None,
        };
        let edges = match (&self.edges, &next.edges) {
            (Some(a), Some(b)) => Some(Box::new(Edges {
                first: a.first.clone(),
                last: b.last.clone(),
            })),
            (None, None) => None,
            _ => return false,
        };
        let first = Part::of(self);
        self.merged
            .get_or_insert_with(|| Box::new(Merged { parts: vec![first] }))
            .parts
            .push(Part::of(next));
        self.count += next.count;
        self.last_ts = next.last_ts;
        self.step = Some(step);
        self.checksum = self.checksum.wrapping_add(next.checksum);
        self.checksum12 = checksum12;
        self.values = values;
        self.edges = edges;
        true
    }

    /// `mergeable`, whatever the size (a run merged so far).
    fn mergeable_run(&self) -> bool {
        self.status == Status::Ok
            && !self.maybe_duplicated
            && self.nan.is_none()
            && self.reason.is_none()
            && match (self.count, self.step) {
                (1, _) => self.first_ts == self.last_ts,
                (n, Some(step)) => {
                    step > 0
                        && self.last_ts.checked_sub(self.first_ts) == Some(step * (n as i64 - 1))
                }
                _ => false,
            }
    }

    /// The fragment as a store that drops NaN values holds it: without its
    /// NaN samples, and with no step (its timestamps are no longer evenly
    /// spaced). Unchanged when it has none.
    pub fn without_nan(mut self) -> Fragment {
        if let Some(n) = self.nan.take() {
            self.count -= n.count.min(self.count);
            self.checksum = n.checksum;
            self.checksum12 = Some(n.checksum12);
            self.step = None;
        }
        self
    }
}

/// Every fragment of a set of manifests, grouped by series.
#[derive(Debug, Default)]
pub struct Loaded {
    pub mode: Option<Mode>,
    pub headers: Vec<Header>,
    /// Runs that have a header but no trailer: the pusher did not finish.
    pub unfinished_runs: Vec<String>,
    /// Fragments per series, sorted by first timestamp.
    pub series: BTreeMap<LabelSet, Vec<Fragment>>,
}

impl Loaded {
    pub fn fragment_count(&self) -> usize {
        self.series.values().map(Vec::len).sum()
    }

    pub fn entries_with_status(&self, status: Status) -> u64 {
        self.series
            .values()
            .flatten()
            .filter(|f| f.status == status)
            .map(|f| f.count)
            .sum()
    }
}

#[derive(Deserialize)]
struct AnyLine {
    kind: String,
}

/// Where a whole header line starts inside a malformed line, if one does
/// (the last such place: a label `kind="header"` can look like one).
fn glued_header(line: &str) -> Option<(usize, AnyLine)> {
    line.rmatch_indices(r#"{"kind":"header""#)
        .map(|(at, _)| at)
        .filter(|&at| at > 0)
        .find(|&at| serde_json::from_str::<Header>(&line[at..]).is_ok())
        .map(|at| {
            let kind = AnyLine {
                kind: "header".into(),
            };
            (at, kind)
        })
}

fn intern_run(run_ids: &mut HashMap<String, Arc<str>>, run: &str) -> Arc<str> {
    if let Some(r) = run_ids.get(run) {
        return r.clone();
    }
    let r: Arc<str> = Arc::from(run);
    run_ids.insert(run.to_string(), r.clone());
    r
}

/// The sums of a fragment's inline samples, once they are shown to be
/// the fragment's entries (their checksum is the fragment's).
fn inline_sums(samples: &[[String; 2]], count: u64, checksum: u64) -> Result<ValueSums, String> {
    let mut parsed = Vec::with_capacity(samples.len());
    let mut digest = Digest::default();
    for [t, v] in samples {
        let t = parse_ts_field(t)?;
        let v: f64 = v
            .parse()
            .map_err(|_| format!("invalid sample value {v:?}"))?;
        digest.add(crate::checksum::metric_sample(t, v));
        parsed.push((t, v));
    }
    if digest.count != count || digest.sum != checksum {
        return Err("\"samples\" do not match the fragment's count and checksum".into());
    }
    // As from a `values` line, which does not record `abs`.
    Ok(ValueSums {
        abs: 0.0,
        ..ValueSums::of(parsed.into_iter())
    })
}

fn parse_ts_field(s: &str) -> Result<i64, String> {
    s.parse::<i64>()
        .map_err(|_| format!("invalid timestamp {s:?}"))
}

/// Which fragments of a run have their final status, by id.
#[derive(Default)]
struct Settled {
    bits: Vec<u64>,
    /// Ids too large for `bits` (not made by looker-push).
    big: std::collections::HashSet<u64>,
}

impl Settled {
    fn contains(&self, id: u64) -> bool {
        match usize::try_from(id / 64) {
            Ok(w) if id < 1 << 32 => self.bits.get(w).is_some_and(|b| b >> (id % 64) & 1 == 1),
            _ => self.big.contains(&id),
        }
    }

    fn insert(&mut self, id: u64) {
        if id < 1 << 32 {
            let w = (id / 64) as usize;
            if self.bits.len() <= w {
                self.bits.resize(w + 1, 0);
            }
            self.bits[w] |= 1 << (id % 64);
        } else {
            self.big.insert(id);
        }
    }
}

/// Fragments with their final status, per series, as they are read.
struct Finals {
    done: Vec<Vec<Fragment>>,
    /// Per series, the run of small fragments being merged.
    open: Vec<Option<Fragment>>,
    merge_small: bool,
}

/// A run that takes no more parts: its list of parts at its size.
fn closed(mut run: Fragment) -> Fragment {
    if let Some(m) = run.merged.as_mut() {
        m.parts.shrink_to_fit();
    }
    run
}

impl Finals {
    fn settle(&mut self, series: u32, frag: Fragment) {
        let i = series as usize;
        if self.done.len() <= i {
            self.done.resize_with(i + 1, Vec::new);
            self.open.resize_with(i + 1, || None);
        }
        if self.merge_small && frag.mergeable() {
            if let Some(run) = self.open[i].as_mut() {
                if run.absorb(&frag) {
                    return;
                }
            }
            if let Some(run) = self.open[i].replace(frag) {
                self.done[i].push(closed(run));
            }
        } else {
            // Anything else of the series ends its run: a merged run never
            // spans a fragment that is not in it.
            if let Some(run) = self.open[i].take() {
                self.done[i].push(closed(run));
            }
            self.done[i].push(frag);
        }
    }
}

/// Splits every merged run that shares time with another fragment of its
/// series (a re-push, input out of order, a refused fragment reaching
/// into it): where fragments overlap, the verifier judges the fragments
/// as pushed, and a run would make it compare different contents.
fn split_shared_runs(mut frags: Vec<Fragment>) -> Vec<Fragment> {
    if frags.iter().all(|f| f.merged.is_none()) {
        return frags;
    }
    let span = |f: &Fragment| (f.first_ts.min(f.last_ts), f.first_ts.max(f.last_ts));
    frags.sort_by_key(span);
    let mut out = Vec::with_capacity(frags.len());
    let mut group: Vec<Fragment> = Vec::new();
    let mut end = i64::MIN;
    let flush = |group: &mut Vec<Fragment>, out: &mut Vec<Fragment>| {
        if group.len() > 1 {
            out.extend(group.drain(..).flat_map(Fragment::split));
        } else {
            out.append(group);
        }
    };
    for f in frags {
        let (a, b) = span(&f);
        if !group.is_empty() && a > end {
            flush(&mut group, &mut out);
        }
        end = if group.is_empty() { b } else { end.max(b) };
        group.push(f);
    }
    flush(&mut group, &mut out);
    out
}

/// Reads and merges manifests. A fragment's final status (its outcome, or
/// a line with a final status) is its last word: lines about it after
/// that are ignored, so a manifest concatenated twice counts once. A
/// fragment still `pending` at the end becomes `unknown`.
///
/// With `merge_small`, consecutive small acknowledged fragments of a
/// series on one time grid are read as one (`Fragment::absorb`), as they
/// are read, so memory follows the merged runs, not the fragments. Only
/// for stores that keep values exactly: a merged run's checksums are
/// exact, but its value sums are kept only while its parts share a scale,
/// and the tolerance of a store that rounds values (VictoriaMetrics)
/// would grow with the run.
pub fn load(paths: &[PathBuf], merge_small: bool) -> Result<Loaded, ManifestError> {
    let mut out = Loaded::default();
    let mut finals = Finals {
        done: Vec::new(),
        open: Vec::new(),
        merge_small,
    };
    let mut settled: HashMap<Arc<str>, Settled> = HashMap::new();
    // (run, id) -> (series, fragment)
    // Series are interned: a manifest repeats each label set once per
    // fragment line, and keeping a copy per fragment dominated memory.
    let mut frags: HashMap<(Arc<str>, u64), (u32, Fragment)> = HashMap::new();
    let mut series_ids: HashMap<LabelSet, u32> = HashMap::new();
    let mut series_list: Vec<LabelSet> = Vec::new();
    let mut runs: HashMap<String, bool> = HashMap::new();
    let mut run_ids: HashMap<String, Arc<str>> = HashMap::new();
    let mut versions: HashMap<String, u32> = HashMap::new();
    // (run, series number) -> series, from `series` lines (version 2).
    let mut by_sid: HashMap<(Arc<str>, u64), u32> = HashMap::new();
    for path in paths {
        let file = File::open(path).map_err(|source| ManifestError::Io {
            path: path.clone(),
            source,
        })?;
        let mut saw_header = false;
        let mut reader = BufReader::new(file);
        let mut raw = Vec::new();
        let mut lineno = 0u64;
        // A malformed line, forgiven if a header or the end follows.
        let mut cut: Option<ManifestError> = None;
        loop {
            raw.clear();
            let n = reader
                .read_until(b'\n', &mut raw)
                .map_err(|source| ManifestError::Io {
                    path: path.clone(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            lineno += 1;
            let perr = |reason: String| ManifestError::Parse {
                path: path.clone(),
                line: lineno,
                reason,
            };
            let ended = raw.last() == Some(&b'\n');
            if ended {
                raw.pop();
            }
            let line = match std::str::from_utf8(&raw) {
                Ok(l) => l,
                // Cut inside a multi-byte character by a crash (the JSON
                // is then cut short too).
                Err(e) if e.error_len().is_none() => continue,
                Err(e) => return Err(perr(format!("not UTF-8: {e}"))),
            };
            if line.trim().is_empty() {
                continue;
            }
            let mut line = line;
            let kind: AnyLine = match serde_json::from_str(line) {
                Ok(k) => k,
                Err(e) => match glued_header(line) {
                    // A killed run's manifest and another concatenated
                    // (`cat a b`): its cut last line runs into b's header.
                    Some((at, k)) => {
                        line = &line[at..];
                        k
                    }
                    // A line cut short by a crash is expected: the file's
                    // last one, or one a later run appended after (its
                    // header comes next). Cut inside a number, it is
                    // "invalid", not "EOF".
                    None if e.is_eof() || !ended => continue,
                    None => {
                        cut = Some(perr(e.to_string()));
                        continue;
                    }
                },
            };
            if let Some(e) = cut.take() {
                if kind.kind != "header" {
                    return Err(e);
                }
            }
            match kind.kind.as_str() {
                "header" => {
                    let h: Header = serde_json::from_str(line).map_err(|e| perr(e.to_string()))?;
                    if h.version > FORMAT_VERSION {
                        return Err(perr(format!(
                            "manifest format version {} is newer than this tool's {}",
                            h.version, FORMAT_VERSION
                        )));
                    }
                    match out.mode {
                        None => out.mode = Some(h.mode),
                        Some(m) if m != h.mode => return Err(ManifestError::MixedModes),
                        _ => {}
                    }
                    runs.entry(h.run.clone()).or_insert(false);
                    versions.insert(h.run.clone(), h.version);
                    saw_header = true;
                    out.headers.push(h);
                }
                "trailer" => {
                    let t: Trailer = serde_json::from_str(line).map_err(|e| perr(e.to_string()))?;
                    runs.insert(t.run, true);
                }
                "series" => {
                    if !saw_header {
                        return Err(ManifestError::NoHeader { path: path.clone() });
                    }
                    let l: SeriesLine =
                        serde_json::from_str(line).map_err(|e| perr(e.to_string()))?;
                    let run = intern_run(&mut run_ids, &l.run);
                    let next = series_list.len() as u32;
                    let idx = *series_ids.entry(l.labels).or_insert_with_key(|l| {
                        series_list.push(l.clone());
                        next
                    });
                    by_sid.insert((run, l.sid), idx);
                }
                "fragment" => {
                    if !saw_header {
                        return Err(ManifestError::NoHeader { path: path.clone() });
                    }
                    let f: FragmentLine =
                        serde_json::from_str(line).map_err(|e| perr(e.to_string()))?;
                    let run = intern_run(&mut run_ids, &f.run);
                    // Only version 2 refers to series by number.
                    let v2 = f.sid.is_some() || versions.get(&f.run).is_some_and(|&v| v >= 2);
                    let metrics = out.mode == Some(Mode::Metrics);
                    let idx = match (f.labels, f.sid) {
                        (Some(labels), _) => {
                            let next = series_list.len() as u32;
                            *series_ids.entry(labels).or_insert_with_key(|l| {
                                series_list.push(l.clone());
                                next
                            })
                        }
                        (None, Some(sid)) => {
                            *by_sid.get(&(run.clone(), sid)).ok_or_else(|| {
                                perr(format!("series {sid} of run {} is not defined by an earlier \"series\" line", f.run))
                            })?
                        }
                        (None, None) => return Err(perr("fragment without \"labels\" or \"sid\"".into())),
                    };
                    let hex =
                        |c: &Option<String>, what: &str| -> Result<Option<u64>, ManifestError> {
                            match c {
                                Some(c) => Digest::parse_hex(c)
                                    .map(Some)
                                    .ok_or_else(|| perr(format!("invalid {what} {c:?}"))),
                                None => Ok(None),
                            }
                        };
                    let checksum = Digest::parse_hex(&f.checksum)
                        .ok_or_else(|| perr(format!("invalid checksum {:?}", f.checksum)))?;
                    // Version 2 leaves out a checksum12 equal to the checksum.
                    let checksum12 = match hex(&f.checksum12, "checksum12")? {
                        None if v2 && metrics => Some(checksum),
                        c => c,
                    };
                    let nan = match (
                        f.nan,
                        hex(&f.checksum_without_nan, "checksum_without_nan")?,
                        hex(&f.checksum12_without_nan, "checksum12_without_nan")?,
                    ) {
                        (Some(count), Some(checksum), Some(checksum12)) if count > 0 => {
                            Some(NanInfo {
                                count,
                                checksum,
                                checksum12,
                            })
                        }
                        (Some(count), Some(checksum), None) if count > 0 && v2 => Some(NanInfo {
                            count,
                            checksum,
                            checksum12: checksum,
                        }),
                        (Some(count), _, _) if count > 0 => {
                            return Err(perr("\"nan\" without its checksums".into()))
                        }
                        _ => None,
                    };
                    let first_ts = parse_ts_field(&f.first_ts).map_err(perr)?;
                    let last_ts = match &f.last_ts {
                        Some(t) => parse_ts_field(t).map_err(perr)?,
                        None => first_ts,
                    };
                    let values = match (&f.samples, &f.values) {
                        (Some(samples), _) => Some(Box::new(
                            inline_sums(samples, f.count, checksum).map_err(perr)?,
                        )),
                        (None, Some(v)) => Some(Box::new(v.sums(f.count).ok_or_else(|| {
                            perr(format!("invalid \"values\" {:?} {:?}", v.ts, v.sum))
                        })?)),
                        (None, None) => None,
                    };
                    let edges = match &f.edges {
                        Some(e) => Some(Box::new(e.edges().ok_or_else(|| {
                            perr(format!("invalid \"edges\" {:?} {:?}", e.first, e.last))
                        })?)),
                        // Version 2 leaves out the edges of a one-entry
                        // log fragment: that entry, whose hash is the checksum.
                        None if v2 && !metrics && f.count == 1 => Some(Box::new(Edges {
                            first: vec![checksum],
                            last: vec![checksum],
                        })),
                        None => None,
                    };
                    let frag = Fragment {
                        run: run.clone(),
                        id: f.id,
                        status: f.status,
                        count: f.count,
                        first_ts,
                        last_ts,
                        step: match &f.step {
                            Some(s) => Some(parse_ts_field(s).map_err(perr)?),
                            None => None,
                        },
                        checksum,
                        checksum12,
                        nan,
                        values,
                        edges,
                        maybe_duplicated: f.maybe_duplicated,
                        reason: f.reason,
                        merged: None,
                    };
                    if settled.get(&run).is_some_and(|s| s.contains(f.id)) {
                        continue;
                    }
                    if frag.status == Status::Pending {
                        frags.insert((run, f.id), (idx, frag));
                    } else {
                        frags.remove(&(run.clone(), f.id));
                        settled.entry(run).or_default().insert(f.id);
                        finals.settle(idx, frag);
                    }
                }
                "outcome" => {
                    let o: OutcomeLine =
                        serde_json::from_str(line).map_err(|e| perr(e.to_string()))?;
                    let run = intern_run(&mut run_ids, &o.run);
                    if o.status == Status::Pending {
                        continue;
                    }
                    for id in o.ids {
                        // A fragment not described (a manifest filtered by
                        // hand): the outcome claims nothing about others.
                        let Some((idx, mut frag)) = frags.remove(&(run.clone(), id)) else {
                            continue;
                        };
                        frag.status = o.status;
                        frag.maybe_duplicated = o.maybe_duplicated;
                        frag.reason.clone_from(&o.reason);
                        settled.entry(run.clone()).or_default().insert(id);
                        finals.settle(idx, frag);
                    }
                }
                other => return Err(perr(format!("unknown line kind {other:?}"))),
            }
        }
        if let Some(e) = cut {
            return Err(e);
        }
        if !saw_header {
            return Err(ManifestError::NoHeader { path: path.clone() });
        }
    }
    drop(series_ids);
    for (_, (sid, mut frag)) in frags {
        frag.status = Status::Unknown;
        frag.reason
            .get_or_insert_with(|| "no outcome recorded (the push did not finish)".into());
        finals.settle(sid, frag);
    }
    let Finals { mut done, open, .. } = finals;
    done.resize_with(series_list.len(), Vec::new);
    for (i, run) in open.into_iter().enumerate() {
        if let Some(run) = run {
            done[i].push(closed(run));
        }
    }
    for (labels, frags) in series_list.into_iter().zip(done) {
        if !frags.is_empty() {
            out.series.insert(labels, split_shared_runs(frags));
        }
    }
    for v in out.series.values_mut() {
        v.sort_by_key(|f| (f.first_ts, f.last_ts));
    }
    let mut unfinished: Vec<String> = runs
        .into_iter()
        .filter(|(_, done)| !done)
        .map(|(r, _)| r)
        .collect();
    unfinished.sort();
    out.unfinished_runs = unfinished;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(run: &str) -> Header {
        Header {
            kind: "header".into(),
            version: FORMAT_VERSION,
            run: run.into(),
            tool: "test".into(),
            mode: Mode::Logs,
            target: "file".into(),
            url: "x".into(),
            tenant: None,
            started: "now".into(),
            hash: "xxh3-64-sum".into(),
        }
    }

    fn meta(id: u64, first: i64, n: u64) -> FragmentMeta {
        let labels = LabelSet::new(vec![("a".into(), "1".into())]).unwrap();
        let mut digest = Digest::default();
        for i in 0..n {
            digest.add(crate::checksum::log_entry(first + i as i64, b"x"));
        }
        FragmentMeta {
            id,
            series: Arc::new(SeriesKey::new(labels)),
            digest,
            digest12: None,
            nan: None,
            edges: None,
            samples: None,
            values: None,
            first_ts: first,
            last_ts: first + n as i64 - 1,
            step: Some(1),
            bytes: n,
        }
    }

    #[test]
    fn last_line_wins_and_pending_reads_as_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.ndjson");
        let w = ManifestWriter::create(&path, &header("r1")).unwrap();
        let (a, b) = (meta(1, 100, 5), meta(2, 200, 3));
        w.record(&[a.clone(), b.clone()], Status::Pending, 0, false, None)
            .unwrap();
        w.record(&[a], Status::Ok, 1, false, None).unwrap();
        // No outcome for b, no trailer: as if the pusher was killed.
        drop(w);
        let loaded = load(&[path], true).unwrap();
        let frags = &loaded.series.values().next().unwrap();
        assert_eq!(frags.len(), 2);
        assert_eq!(frags[0].status, Status::Ok);
        assert_eq!(frags[0].count, 5);
        assert_eq!(frags[1].status, Status::Unknown);
        assert_eq!(loaded.unfinished_runs, vec!["r1".to_string()]);
    }

    #[test]
    fn concatenated_manifests_merge_and_trailer_counts_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        let p1 = dir.path().join("a.ndjson");
        let p2 = dir.path().join("b.ndjson");
        for (p, run) in [(&p1, "r1"), (&p2, "r2")] {
            let w = ManifestWriter::create(p, &header(run)).unwrap();
            let m = meta(1, 100, 4);
            w.record(std::slice::from_ref(&m), Status::Pending, 0, false, None)
                .unwrap();
            w.record(&[m], Status::Ok, 1, false, None).unwrap();
            assert_eq!(w.totals().1.ok, 4);
            w.finish(0, false, None).unwrap();
        }
        let cat = dir.path().join("all.ndjson");
        let mut all = std::fs::read(&p1).unwrap();
        all.extend(std::fs::read(&p2).unwrap());
        std::fs::write(&cat, all).unwrap();
        let loaded = load(&[cat], true).unwrap();
        assert_eq!(
            loaded.fragment_count(),
            2,
            "same id in two runs stays two fragments"
        );
        assert!(loaded.unfinished_runs.is_empty());
        assert_eq!(loaded.entries_with_status(Status::Ok), 8);
    }

    #[test]
    fn nan_counts_round_trip_and_a_fragment_can_be_read_without_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.ndjson");
        let w = ManifestWriter::create(&path, &header("r1")).unwrap();
        let mut m = meta(1, 100, 5);
        m.nan = Some(NanInfo {
            count: 2,
            checksum: 0xabc,
            checksum12: 0xdef,
        });
        w.record(&[m], Status::Ok, 1, false, None).unwrap();
        drop(w);
        let loaded = load(&[path], true).unwrap();
        let f = loaded.series.values().next().unwrap()[0].clone();
        assert_eq!(f.nan.map(|n| n.count), Some(2));
        let g = f.without_nan();
        assert_eq!(
            (g.count, g.checksum, g.checksum12, g.step),
            (3, 0xabc, Some(0xdef), None)
        );
    }

    fn metric_header(run: &str) -> Header {
        Header {
            mode: Mode::Metrics,
            ..header(run)
        }
    }

    fn series(labels: &[(&str, &str)]) -> Arc<crate::batch::Series> {
        let labels = LabelSet::new(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .unwrap();
        Arc::new(crate::batch::Series::new(SeriesKey::new(labels), 0))
    }

    /// A metric fragment as the pusher's batcher makes it.
    fn metric_meta(id: u64, labels: &[(&str, &str)], samples: &[(i64, f64)]) -> FragmentMeta {
        series_meta(id, &series(labels), samples)
    }

    fn series_meta(
        id: u64,
        series: &Arc<crate::batch::Series>,
        samples: &[(i64, f64)],
    ) -> FragmentMeta {
        let mut b = crate::batch::Batcher::new(
            Mode::Metrics,
            crate::batch::BatchLimits {
                fragment_size: 1 << 20,
                fragments_per_message: Some(1 << 20),
                max_message_bytes: 1 << 30,
                linger: std::time::Duration::from_secs(3600),
            },
            1,
        );
        let mut out = Vec::new();
        for &(t, v) in samples {
            b.push_value(
                series,
                0,
                t,
                v,
                crate::checksum::metric_sample(t, v),
                &mut out,
            );
        }
        b.flush(&mut out);
        let mut m = out.remove(0).metas.remove(0);
        m.id = id;
        m
    }

    #[test]
    fn version_2_lines_are_short_and_read_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.ndjson");
        let w = ManifestWriter::create(&path, &metric_header("r1")).unwrap();
        let a = series(&[("__name__", "up"), ("job", "a")]);
        let small = series_meta(1, &a, &[(1000, 1.5), (2000, 1e300)]);
        let big: Vec<(i64, f64)> = (0..10).map(|i| (3000 + i * 10, i as f64 * 0.1)).collect();
        let big = series_meta(2, &a, &big);
        let one = metric_meta(3, &[("__name__", "up"), ("job", "b")], &[(500, 7.0)]);
        let nan = metric_meta(4, &[("__name__", "up"), ("job", "c")], &[(1, f64::NAN)]);
        let all = [small.clone(), big.clone(), one.clone(), nan.clone()];
        assert!(small.samples.is_some() && one.samples.is_some());
        assert!(big.samples.is_none() && nan.samples.is_none());
        w.record(&all, Status::Pending, 0, false, None).unwrap();
        w.record_outcome(&all[..3], Status::Ok, 2, true, None)
            .unwrap();
        w.record_outcome(&all[3..], Status::Rejected, 1, false, Some("HTTP 400: no"))
            .unwrap();
        w.finish(0, false, None).unwrap();
        drop(w);

        let text = std::fs::read_to_string(&path).unwrap();
        let kinds: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].to_string())
            .collect();
        let count = |k: &str| kinds.iter().filter(|x| *x == &format!("{k:?}")).count();
        assert_eq!(
            (count("series"), count("fragment"), count("outcome")),
            (3, 4, 2),
            "{text}"
        );
        let frag_lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("\"fragment\""))
            .collect();
        assert!(frag_lines.iter().all(|l| !l.contains("labels")), "{text}");
        assert!(
            !frag_lines[2].contains("last_ts") && !frag_lines[2].contains("checksum12"),
            "{}",
            frag_lines[2]
        );

        let loaded = load(&[path], true).unwrap();
        assert!(loaded.unfinished_runs.is_empty());
        let find = |id: u64| {
            loaded
                .series
                .values()
                .flatten()
                .find(|f| f.id == id)
                .unwrap()
                .clone()
        };
        for m in &all {
            let f = find(m.id);
            assert_eq!(
                (
                    f.count,
                    f.first_ts,
                    f.last_ts,
                    f.step,
                    f.checksum,
                    f.checksum12,
                    f.nan
                ),
                (
                    m.digest.count,
                    m.first_ts,
                    m.last_ts,
                    m.step,
                    m.digest.sum,
                    m.digest12,
                    m.nan
                ),
                "fragment {}",
                m.id
            );
            let want = m.values.map(|v| ValueSums { abs: 0.0, ..v });
            assert_eq!(f.values.map(|v| *v), want, "fragment {}", m.id);
        }
        assert_eq!(find(1).status, Status::Ok);
        assert!(find(2).maybe_duplicated);
        assert_eq!(find(4).status, Status::Rejected);
        assert_eq!(find(4).reason.as_deref(), Some("HTTP 400: no"));
        assert_eq!(loaded.series.len(), 3);
    }

    #[test]
    fn fragment_lines_are_written_exactly_as_the_format_defines_them() {
        let a = [("__name__", "up"), ("job", "a\"b")];
        let mut metas = vec![
            metric_meta(1, &a, &[(1000, 1.5), (2000, -1e300)]),
            metric_meta(
                2,
                &a,
                &(0..9).map(|i| (i * 7, i as f64 / 3.0)).collect::<Vec<_>>(),
            ),
            metric_meta(3, &a, &[(5, f64::NAN), (6, 2.0), (9, f64::INFINITY)]),
            metric_meta(4, &a, &[(5, 0.1 + 0.2)]),
            meta(5, 100, 1),
            meta(6, 100, 4),
        ];
        metas[4].edges = Some(Edges {
            first: vec![metas[4].digest.sum],
            last: vec![metas[4].digest.sum],
        });
        metas[5].edges = Some(Edges {
            first: vec![1, u64::MAX],
            last: vec![],
        });
        metas[5].step = None;
        metas[2].nan = Some(NanInfo {
            count: 1,
            checksum: 7,
            checksum12: 8,
        });
        let outcomes = [
            Outcome {
                status: Status::Pending,
                attempts: 0,
                maybe_duplicated: false,
                reason: None,
            },
            Outcome {
                status: Status::Rejected,
                attempts: 3,
                maybe_duplicated: true,
                reason: Some("HTTP 400: \"bad\"\n\u{1}é"),
            },
        ];
        for m in &metas {
            for o in outcomes {
                let mut buf = Vec::new();
                write_fragment_line(&mut buf, "\"r\\\"1\"", 9, m, o).unwrap();
                let mut want = serde_json::to_vec(&fragment_line("r\"1", 9, m, o)).unwrap();
                want.push(b'\n');
                assert_eq!(
                    String::from_utf8(buf).unwrap(),
                    String::from_utf8(want).unwrap(),
                    "fragment {}",
                    m.id
                );
            }
        }
    }

    /// Consecutive small acknowledged fragments on one time grid are read
    /// as one; anything else ends the run.
    #[test]
    fn small_fragments_merge_only_along_one_grid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.ndjson");
        let w = ManifestWriter::create(&path, &metric_header("r1")).unwrap();
        let s = series(&[("__name__", "up")]);
        // (id, timestamps, status, maybe_duplicated)
        let plan: Vec<(u64, Vec<i64>, Status, bool)> = vec![
            (0, vec![10, 20], Status::Ok, false),
            (1, vec![30], Status::Ok, false),
            (2, vec![40, 50, 60], Status::Ok, false),
            // A gap of two steps: a new run.
            (3, vec![80], Status::Ok, false),
            (4, vec![90], Status::Ok, false),
            // Refused: ends the run, even though it is on the grid.
            (5, vec![100], Status::Rejected, false),
            (6, vec![110], Status::Ok, false),
            // Sent twice: not merged.
            (7, vec![120], Status::Ok, true),
            (8, vec![130], Status::Ok, false),
            // Another step inside: not merged with 8.
            (9, vec![140, 145], Status::Ok, false),
            // Too large to merge (more than MERGE_FRAGMENTS_UP_TO).
            (
                10,
                (0..20).map(|i| 150 + i * 5).collect(),
                Status::Ok,
                false,
            ),
        ];
        for (id, ts, status, dup) in &plan {
            let samples: Vec<(i64, f64)> = ts.iter().map(|&t| (t, t as f64)).collect();
            let m = series_meta(*id, &s, &samples);
            w.record(std::slice::from_ref(&m), Status::Pending, 0, false, None)
                .unwrap();
            w.record_outcome(&[m], *status, 1, *dup, None).unwrap();
        }
        drop(w);
        let got = |merge| -> Vec<(u64, u64, u64, i64, i64)> {
            let loaded = load(std::slice::from_ref(&path), merge).unwrap();
            loaded
                .series
                .values()
                .next()
                .unwrap()
                .iter()
                .map(|f| (f.id, f.parts(), f.count, f.first_ts, f.last_ts))
                .collect()
        };
        assert_eq!(
            got(true),
            [
                (0, 3, 6, 10, 60),
                (3, 2, 2, 80, 90),
                (5, 1, 1, 100, 100),
                (6, 1, 1, 110, 110),
                (7, 1, 1, 120, 120),
                (8, 1, 1, 130, 130),
                (9, 1, 2, 140, 145),
                (10, 1, 20, 150, 245),
            ]
        );
        assert_eq!(got(false).len(), plan.len());
        let loaded = load(std::slice::from_ref(&path), true).unwrap();
        let run = &loaded.series.values().next().unwrap()[0];
        assert_eq!(
            (run.step, run.merged_ids().map(|m| m.0)),
            (Some(10), Some(2))
        );
        // The merged checksums are the sums of the parts'.
        let single = load(&[path], false).unwrap();
        let parts = &single.series.values().next().unwrap()[..3];
        let sum = parts.iter().fold(0u64, |a, f| a.wrapping_add(f.checksum));
        assert_eq!(run.checksum, sum);
    }

    /// Splitting a merged run gives back exactly the fragments read one
    /// by one (but their value sums, which only rounding stores use).
    #[test]
    fn split_runs_are_the_fragments_as_read_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.ndjson");
        let logs = Header {
            run: "r2".into(),
            ..header("r2")
        };
        let w = ManifestWriter::create(&path, &metric_header("r1")).unwrap();
        let s = series(&[("__name__", "up")]);
        let mut t = 0;
        for (id, n) in [3usize, 1, 2, 1, 1, 4, 2].into_iter().enumerate() {
            let samples: Vec<(i64, f64)> = (0..n)
                .map(|_| {
                    t += 5;
                    (t, t as f64 / 3.0)
                })
                .collect();
            w.record(
                &[series_meta(id as u64, &s, &samples)],
                Status::Ok,
                1,
                false,
                None,
            )
            .unwrap();
        }
        drop(w);
        // Logs, with edges: entries one per timestamp, 10 apart.
        let w = ManifestWriter::create(&path, &logs).unwrap();
        let labels = LabelSet::new(vec![("app".into(), "a".into())]).unwrap();
        let ls = Arc::new(crate::batch::Series::new(SeriesKey::new(labels), 0));
        let mut t = 0;
        for (id, n) in [2usize, 1, 3, 1].into_iter().enumerate() {
            let mut b = crate::batch::Batcher::new(
                Mode::Logs,
                crate::batch::BatchLimits {
                    fragment_size: 1 << 20,
                    fragments_per_message: Some(1),
                    max_message_bytes: 1 << 30,
                    linger: std::time::Duration::from_secs(3600),
                },
                1,
            );
            let mut out = Vec::new();
            for _ in 0..n {
                t += 10;
                let line = format!("l{t}");
                let h = crate::checksum::log_entry(t, line.as_bytes());
                b.push_line(&ls, 0, t, &line, h, &mut out);
            }
            b.flush(&mut out);
            let mut m = out.remove(0).metas.remove(0);
            m.id = id as u64;
            w.record(&[m], Status::Ok, 1, false, None).unwrap();
        }
        drop(w);
        let text = std::fs::read_to_string(&path).unwrap();
        for (run, part) in text.split(r#"{"kind":"header""#).skip(1).enumerate() {
            let p = dir.path().join(format!("{run}.ndjson"));
            std::fs::write(&p, format!(r#"{{"kind":"header"{part}"#)).unwrap();
            let one = |merge| -> Vec<String> {
                let mut v: Vec<String> = load(std::slice::from_ref(&p), merge)
                    .unwrap()
                    .series
                    .into_values()
                    .flatten()
                    .flat_map(Fragment::split)
                    .map(|mut f| {
                        f.values = None;
                        format!("{f:?}")
                    })
                    .collect();
                v.sort();
                v
            };
            let merged = load(std::slice::from_ref(&p), true).unwrap();
            assert!(merged.series.values().flatten().any(|f| f.parts() > 2));
            assert_eq!(one(true), one(false), "run {run}");
        }
    }

    #[test]
    fn a_one_entry_log_fragment_gets_its_edges_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.ndjson");
        let w = ManifestWriter::create(&path, &header("r1")).unwrap();
        let mut m = meta(1, 100, 1);
        m.edges = Some(Edges {
            first: vec![m.digest.sum],
            last: vec![m.digest.sum],
        });
        w.record(&[m.clone()], Status::Ok, 1, false, None).unwrap();
        drop(w);
        assert!(!std::fs::read_to_string(&path).unwrap().contains("edges"));
        let f = load(&[path], true).unwrap().series.values().next().unwrap()[0].clone();
        assert_eq!(f.edges.map(|e| *e), m.edges);
    }

    #[test]
    fn version_1_manifests_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.ndjson");
        let frag = |status: &str, attempts: u32| {
            format!(
                r#"{{"kind":"fragment","run":"r0","id":7,"status":"{status}","labels":{{"__name__":"up"}},"count":2,"first_ts":"1000","last_ts":"2000","step":"1000","checksum":"00000000000000ff","values":{{"ts":"0000000000000001","scale":0.5,"sum":"12","rel":0.0,"inv":0.25,"max_abs":3.0}},"attempts":{attempts}}}"#
            )
        };
        let text = [
            r#"{"kind":"header","version":1,"run":"r0","tool":"looker-push 0.1.0","mode":"metrics","target":"null","url":"null","started":"x","hash":"xxh3-64-sum"}"#.to_string(),
            frag("pending", 0),
            frag("ok", 1),
            r#"{"kind":"trailer","run":"r0","fragments":{"ok":1,"rejected":0,"failed":0,"unknown":0},"entries":{"ok":2,"rejected":0,"failed":0,"unknown":0},"skipped_lines":0,"interrupted":false,"finished":"x"}"#.to_string(),
        ]
        .join("\n");
        std::fs::write(&path, text).unwrap();
        let loaded = load(&[path], true).unwrap();
        let (labels, frags) = loaded.series.iter().next().unwrap();
        assert_eq!(labels.to_json(), r#"{"__name__":"up"}"#);
        let f = &frags[0];
        assert_eq!(
            (f.status, f.count, f.last_ts, f.checksum, f.checksum12),
            (Status::Ok, 2, 2000, 0xff, None),
            "version 1 has no checksum12 to stand in for"
        );
        assert_eq!(f.values.as_ref().map(|v| v.sum), Some(12));
    }

    #[test]
    fn inline_samples_that_do_not_match_the_checksum_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.ndjson");
        let w = ManifestWriter::create(&path, &metric_header("r1")).unwrap();
        let m = metric_meta(1, &[("__name__", "up")], &[(1000, 2.0)]);
        w.record(&[m], Status::Ok, 1, false, None).unwrap();
        drop(w);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(r#"["1000","2.0"]"#), "{text}");
        std::fs::write(
            &path,
            text.replace(r#"["1000","2.0"]"#, r#"["1000","2.5"]"#),
        )
        .unwrap();
        let err = load(std::slice::from_ref(&path), true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m.ndjson:3") && err.contains("checksum"),
            "{err}"
        );
    }

    #[test]
    fn a_series_must_be_defined_before_use_and_stray_outcomes_claim_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.ndjson");
        let w = ManifestWriter::create(&path, &header("r1")).unwrap();
        drop(w);
        let head = std::fs::read_to_string(&path).unwrap();
        let bad = r#"{"kind":"fragment","run":"r1","id":1,"status":"ok","sid":4,"count":1,"first_ts":"1","checksum":"01"}"#;
        std::fs::write(&path, format!("{head}{bad}\n")).unwrap();
        let err = load(std::slice::from_ref(&path), true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m.ndjson:2") && err.contains("series 4"),
            "{err}"
        );
        // An outcome for a fragment the manifest does not describe (one
        // filtered by hand) makes no claim.
        let stray = r#"{"kind":"outcome","run":"r1","ids":[9],"status":"ok"}"#;
        std::fs::write(&path, format!("{head}{stray}\n")).unwrap();
        assert_eq!(load(&[path], true).unwrap().fragment_count(), 0);
    }

    /// A manifest cut at any byte (the pusher killed mid-write), with
    /// labels and reasons outside ASCII, loads; every fragment it reads as
    /// `ok` had its whole outcome line written; none is lost.
    #[test]
    fn a_manifest_cut_at_any_byte_loads_and_claims_only_what_was_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let full = dir.path().join("full.ndjson");
        let w = ManifestWriter::create(&full, &metric_header("r1")).unwrap();
        let s1 = series(&[("__name__", "up"), ("region", "Île-de-France ✓")]);
        let s2 = series(&[("__name__", "up"), ("zone", "東京")]);
        let a = series_meta(1, &s1, &[(1000, 1.0), (2000, 2.0)]);
        let b = series_meta(2, &s2, &[(1000, 0.5)]);
        let c = series_meta(
            3,
            &s1,
            &(3..20).map(|i| (i * 1000, i as f64)).collect::<Vec<_>>(),
        );
        w.record(&[a.clone(), b.clone()], Status::Pending, 0, false, None)
            .unwrap();
        w.record_outcome(&[a.clone(), b.clone()], Status::Ok, 1, false, None)
            .unwrap();
        w.record(std::slice::from_ref(&c), Status::Pending, 0, false, None)
            .unwrap();
        w.record_outcome(
            std::slice::from_ref(&c),
            Status::Rejected,
            1,
            false,
            Some("entrée refusée: «trop vieille»"),
        )
        .unwrap();
        w.finish(0, false, None).unwrap();
        drop(w);
        let bytes = std::fs::read(&full).unwrap();
        // Where the ok outcome of fragments 1 and 2 ends (its newline).
        let text = String::from_utf8(bytes.clone()).unwrap();
        let ok_at = text.find("\"status\":\"ok\"").unwrap();
        let ok_end = ok_at + text[ok_at..].find('\n').unwrap();
        let cut = dir.path().join("cut.ndjson");
        for k in 0..=bytes.len() {
            std::fs::write(&cut, &bytes[..k]).unwrap();
            let loaded = match load(std::slice::from_ref(&cut), true) {
                Ok(l) => l,
                Err(ManifestError::NoHeader { .. }) if k < text.find('\n').unwrap() + 1 => continue,
                Err(e) => panic!("cut at byte {k}: {e}"),
            };
            let all: Vec<&Fragment> = loaded.series.values().flatten().collect();
            for f in &all {
                assert!(
                    f.status != Status::Ok || k >= ok_end,
                    "cut at byte {k}: fragment {} reads as ok before its outcome was whole",
                    f.id
                );
            }
            if k == bytes.len() {
                let st: Vec<(u64, Status)> = {
                    let mut v: Vec<_> = all.iter().map(|f| (f.id, f.status)).collect();
                    v.sort();
                    v
                };
                assert_eq!(
                    st,
                    [(1, Status::Ok), (2, Status::Ok), (3, Status::Rejected)]
                );
            }
        }
    }

    #[test]
    fn a_run_appended_after_a_cut_one_starts_on_a_line_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.ndjson");
        let w = ManifestWriter::create(&path, &metric_header("r1")).unwrap();
        w.record(
            &[metric_meta(1, &[("__name__", "a")], &[(1, 1.0)])],
            Status::Ok,
            1,
            false,
            None,
        )
        .unwrap();
        drop(w);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 10);
        std::fs::write(&path, &bytes).unwrap();
        let w = ManifestWriter::create(&path, &metric_header("r2")).unwrap();
        w.record(
            &[metric_meta(1, &[("__name__", "b")], &[(1, 1.0)])],
            Status::Ok,
            1,
            false,
            None,
        )
        .unwrap();
        w.finish(0, false, None).unwrap();
        drop(w);
        let loaded = load(&[path], true).unwrap();
        let ok: Vec<String> = loaded
            .series
            .iter()
            .filter(|(_, f)| f.iter().any(|f| f.status == Status::Ok))
            .map(|(l, _)| l.to_json())
            .collect();
        assert_eq!(
            ok,
            [r#"{"__name__":"b"}"#],
            "r1's cut fragment claims nothing"
        );
        assert_eq!(loaded.unfinished_runs, ["r1"]);
    }

    /// `cat` of a killed run's manifest (cut mid-line) and another: the
    /// cut line runs into the next header, and both runs still load.
    #[test]
    fn a_cut_manifest_concatenated_with_another_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (p1, p2) = (dir.path().join("1.ndjson"), dir.path().join("2.ndjson"));
        for (p, run, name) in [(&p1, "r1", "a"), (&p2, "r2", "b")] {
            let w = ManifestWriter::create(p, &metric_header(run)).unwrap();
            for id in 0..2 {
                let m = metric_meta(id, &[("__name__", name)], &[(id as i64, 1.0)]);
                w.record(&[m], Status::Ok, 1, false, None).unwrap();
            }
            w.finish(0, false, None).unwrap();
        }
        let mut cut = std::fs::read(&p1).unwrap();
        // Kill r1 in the middle of its second fragment line.
        let needle = b"\"fragment\"";
        let second = cut
            .windows(needle.len())
            .rposition(|w| w == needle)
            .unwrap();
        cut.truncate(second + 30);
        cut.extend(std::fs::read(&p2).unwrap());
        let all = dir.path().join("all.ndjson");
        std::fs::write(&all, cut).unwrap();
        let loaded = load(&[all], false).unwrap();
        let ok: Vec<(String, usize)> = loaded
            .series
            .iter()
            .map(|(l, f)| {
                (
                    l.to_json(),
                    f.iter().filter(|f| f.status == Status::Ok).count(),
                )
            })
            .collect();
        assert_eq!(
            ok,
            [
                (r#"{"__name__":"a"}"#.to_string(), 1),
                (r#"{"__name__":"b"}"#.to_string(), 2)
            ]
        );
        assert_eq!(loaded.unfinished_runs, ["r1"]);
    }

    /// A series labelled `kind="header"` cut right after its labels looks
    /// like a glued header; it is a cut line like any other.
    #[test]
    fn a_cut_line_with_a_header_like_label_is_still_just_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.ndjson");
        let w = ManifestWriter::create(&path, &metric_header("r1")).unwrap();
        let m = metric_meta(1, &[("kind", "header"), ("x", "y")], &[(1, 1.0)]);
        w.record(&[m], Status::Ok, 1, false, None).unwrap();
        drop(w);
        let text = std::fs::read_to_string(&path).unwrap();
        let series = text.lines().nth(1).unwrap();
        assert!(series.contains(r#"{"kind":"header","x":"y"}"#), "{series}");
        let cut_at = text.find(series).unwrap() + series.len() - 1;
        std::fs::write(&path, &text[..cut_at]).unwrap();
        let loaded = load(&[path], true).unwrap();
        assert_eq!(loaded.fragment_count(), 0);
    }

    #[test]
    fn series_numbered_in_a_failed_write_are_numbered_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.ndjson");
        let w = ManifestWriter::create(&path, &metric_header("r1")).unwrap();
        let s1 = series(&[("__name__", "up")]);
        // The disk is full for one write.
        let real = std::mem::replace(
            &mut w.lock().file,
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        );
        assert!(w
            .record(
                &[series_meta(1, &s1, &[(1, 1.0)])],
                Status::Pending,
                0,
                false,
                None
            )
            .is_err());
        w.lock().file = real;
        w.record(
            &[series_meta(2, &s1, &[(2, 1.0)])],
            Status::Ok,
            1,
            false,
            None,
        )
        .unwrap();
        drop(w);
        let loaded = load(&[path], true).unwrap();
        let f = &loaded.series.values().next().unwrap()[0];
        assert_eq!((f.id, f.status), (2, Status::Ok));
    }

    #[test]
    fn each_writer_numbers_series_itself_and_equal_labels_merge() {
        let dir = tempfile::tempdir().unwrap();
        fn labels(n: &str) -> [(&str, &str); 2] {
            [("__name__", "up"), ("s", n)]
        }
        // One key used by two writers, and a second key with the same
        // labels (a series forgotten by the pusher and seen again).
        let a = metric_meta(1, &labels("a"), &[(1, 1.0)]);
        let b = metric_meta(2, &labels("b"), &[(1, 1.0)]);
        let mut a_again = metric_meta(3, &labels("a"), &[(2, 1.0)]);
        assert!(!Arc::ptr_eq(&a.series, &a_again.series));
        let mut b_later = b.clone();
        b_later.id = 4;
        let (p1, p2) = (dir.path().join("1.ndjson"), dir.path().join("2.ndjson"));
        let w1 = ManifestWriter::create(&p1, &metric_header("r1")).unwrap();
        let w2 = ManifestWriter::create(&p2, &metric_header("r2")).unwrap();
        w1.record(&[a.clone(), b.clone()], Status::Ok, 1, false, None)
            .unwrap();
        w2.record(&[b.clone(), a.clone()], Status::Ok, 1, false, None)
            .unwrap();
        w1.record(
            &[a_again.clone(), b_later.clone()],
            Status::Ok,
            1,
            false,
            None,
        )
        .unwrap();
        a_again.id = 5;
        w2.record(&[a_again], Status::Ok, 1, false, None).unwrap();
        drop((w1, w2));
        let series_lines = |p: &Path| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .filter(|l| l.contains("\"kind\":\"series\""))
                .count()
        };
        // w1 numbers a, b, a_again, and b again: w2 numbered b in between
        // (a key remembers one writer). w2 numbers b, a, a_again.
        assert_eq!((series_lines(&p1), series_lines(&p2)), (4, 3));
        let loaded = load(&[p1, p2], false).unwrap();
        let per: Vec<(String, Vec<u64>)> = loaded
            .series
            .iter()
            .map(|(l, f)| {
                let mut ids: Vec<u64> = f.iter().map(|f| f.id).collect();
                ids.sort();
                (l.to_json(), ids)
            })
            .collect();
        assert_eq!(
            per,
            [
                (r#"{"__name__":"up","s":"a"}"#.to_string(), vec![1, 1, 3, 5]),
                (r#"{"__name__":"up","s":"b"}"#.to_string(), vec![2, 2, 4]),
            ]
        );
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.ndjson");
        std::fs::write(&path, "{\"kind\":\"nonsense\"}\n").unwrap();
        let err = load(std::slice::from_ref(&path), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("m.ndjson:1"), "{err}");
        std::fs::write(&path, "").unwrap();
        assert!(matches!(
            load(&[path], true),
            Err(ManifestError::NoHeader { .. })
        ));
    }
}
