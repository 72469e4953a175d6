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

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::checksum::{Digest, ValueSums};
use crate::labels::LabelSet;
use crate::record::Mode;

mod load;
mod merge;

pub use load::{load, Fragment, Loaded};
pub use merge::{overlap_groups, Merged, Part, MERGED_UP_TO, MERGE_FRAGMENTS_UP_TO};

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
    /// Metrics only, unless `samples` lists the values (the reader then
    /// computes these from them).
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

fn is_zero_u64(n: &u64) -> bool {
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
    /// Log entries that came from further back than the pusher remembered
    /// their series: not checked for repeating earlier input (a repeat
    /// among them, kept once by Loki, reads as missing).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub late_unchecked: u64,
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
    late_unchecked: u64,
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
                late_unchecked: 0,
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

    /// Sets the count of late log entries not checked for repeats.
    pub fn set_late_unchecked(&self, n: u64) {
        self.lock().late_unchecked = n;
    }

    /// Writes the trailer and syncs the file to disk.
    pub fn finish(
        &self,
        skipped_lines: u64,
        interrupted: bool,
        input_error: Option<String>,
    ) -> Result<(), ManifestError> {
        let (fragments, entries) = self.totals();
        let (run, duplicates_skipped, late_unchecked) = {
            let st = self.lock();
            (st.run.clone(), st.duplicates_skipped, st.late_unchecked)
        };
        self.write_json(&Trailer {
            kind: "trailer".into(),
            run,
            fragments,
            entries,
            skipped_lines,
            duplicates_skipped,
            late_unchecked,
            interrupted,
            input_error,
            finished: crate::timefmt::format_rfc3339_ns(crate::timefmt::now_ns()),
        })?;
        self.lock().file.sync_all().map_err(|e| self.io_err(e))
    }
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

    /// The count of late log entries a run could not check for repeats
    /// reaches the verifier through the trailer (absent when zero).
    #[test]
    fn late_unchecked_entries_are_carried_by_the_trailer() {
        let dir = tempfile::tempdir().unwrap();
        for (run, n) in [("r1", 0), ("r2", 7)] {
            let path = dir.path().join(format!("{run}.ndjson"));
            let w = ManifestWriter::create(&path, &header(run)).unwrap();
            w.record(&[meta(1, 100, 5)], Status::Ok, 1, false, None)
                .unwrap();
            w.set_late_unchecked(n);
            w.finish(0, false, None).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(text.contains("late_unchecked"), n > 0, "{text}");
            let loaded = load(&[path], true).unwrap();
            let want: Vec<(String, u64)> = if n > 0 { vec![(run.into(), n)] } else { vec![] };
            assert_eq!(loaded.late_unchecked, want);
        }
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
            let sums = m
                .values
                .or_else(|| m.samples.as_ref().map(|s| ValueSums::of(s.iter().copied())));
            let want = sums.map(|v| ValueSums { abs: 0.0, ..v });
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
        // Two malformed lines: the first is named.
        std::fs::write(
            &path,
            "{\"kind\":\"header\",\"version\":2,\"run\":\"r\",\"tool\":\"t\",\"mode\":\"logs\",\"target\":\"null\",\"url\":\"null\",\"started\":\"x\",\"hash\":\"xxh3-64-sum\"}\ngarbage\ngarbage\n{\"kind\":\"trailer\"}\n",
        )
        .unwrap();
        let err = load(std::slice::from_ref(&path), true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m.ndjson:2: expected value (at column 1)"),
            "{err}"
        );
        // Records given as a manifest: not a manifest, not a line error.
        std::fs::write(
            &path,
            "{\"labels\":{\"a\":\"1\"},\"ts\":\"1\",\"line\":\"x\"}\n",
        )
        .unwrap();
        assert!(matches!(
            load(std::slice::from_ref(&path), true),
            Err(ManifestError::NoHeader { .. })
        ));
        std::fs::write(&path, "").unwrap();
        assert!(matches!(
            load(&[path], true),
            Err(ManifestError::NoHeader { .. })
        ));
    }
}
