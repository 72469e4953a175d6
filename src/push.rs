//! The push pipeline: read -> parse -> pace -> batch -> encode -> send ->
//! record.
//!
//! A reader thread cuts input into blocks of lines; the batching thread
//! parses, paces and batches them and encodes full messages; one async
//! task per lane sends that lane's messages one at a time and records
//! each outcome in the manifest. Every hand-off is a bounded channel, so
//! memory does not grow with input size: a slow store slows reading.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::batch::{Batch, BatchLimits, Batcher, Fragment};
use crate::encode::{Encoder, Encoding};
use crate::exit::Exit;
use crate::http::ClientArgs;
use crate::input::{self, Item, Source};
use crate::labels::LabelSet;
use crate::manifest::{FragmentMeta, Header, ManifestWriter, Status};
use crate::record::{self, Line, Mode, Payload, RecordError};
use crate::report::{Latency, Progress, Stats};
use crate::schedule::{Pace, Pacer, RateSpec};
use crate::series::{Repeat, SeriesTable};
use crate::sink::{Delivery, RetryPolicy, Sender, Target};
use crate::timefmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    /// The looker record format: one entry per line, or many of one series
    /// per line as series lines (VictoriaMetrics' JSON line format, as its
    /// export writes) or stream lines (Loki streams, as its query answers)
    Ndjson,
    /// Each text line is a log line; labels come from --label (without
    /// any, the stream is {job="looker-push"}).
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnInvalid {
    /// Stop at the first invalid line (after pushing what was accepted).
    Fail,
    /// Skip invalid lines, count them and report them.
    Skip,
}

/// Everything a push needs, validated by the binary.
#[derive(Debug, Clone)]
pub struct PushConfig {
    pub inputs: Vec<Source>,
    pub format: InputFormat,
    /// Labels of raw input.
    pub raw_labels: Option<LabelSet>,
    pub on_invalid: OnInvalid,
    pub retime: bool,
    pub speed: Option<f64>,
    pub limits: BatchLimits,
    pub max_concurrent_writes: usize,
    pub target: Target,
    pub encoding: Encoding,
    pub client: ClientArgs,
    pub retry: RetryPolicy,
    pub rate: RateSpec,
    pub manifest: Option<PathBuf>,
    pub max_line_bytes: usize,
    /// Series kept in memory; see `SeriesTable::evict`.
    pub max_series: usize,
    /// Log entries remembered below their series' latest timestamp, over
    /// all series, to push a repeated entry once (see `series::Latest`).
    pub remember_entries: usize,
    pub report: Option<PathBuf>,
    pub report_csv: Option<PathBuf>,
    pub progress_interval: Duration,
    pub quiet: bool,
    pub metrics_addr: Option<SocketAddr>,
    /// How long in-flight work may take to finish after SIGINT/SIGTERM.
    pub shutdown_grace: Duration,
    /// The process ends when the push does: leave the series table for the
    /// operating system to take back. Freeing 100,000 series one by one
    /// took a third of the CPU of pushing 20 samples each.
    pub exit_after: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Http(#[from] crate::http::HttpConfigError),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkOpenError),
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("{0}")]
    Fatal(String),
}

/// What a push did, as written to `--report`.
#[derive(Debug, Serialize)]
pub struct PushReport {
    pub tool: String,
    pub target: String,
    pub url: String,
    pub mode: Option<Mode>,
    pub run: String,
    pub duration_s: f64,
    pub entries_read: u64,
    pub entries_acked: u64,
    pub entries_rejected: u64,
    pub entries_failed: u64,
    pub entries_unknown: u64,
    pub skipped_lines: u64,
    pub duplicates_skipped: u64,
    /// Log entries that arrived later than the pusher remembers their
    /// series back: not checked for repeating an earlier entry.
    pub late_unchecked: u64,
    pub bytes_acked: u64,
    pub requests: u64,
    pub retries: u64,
    pub entries_per_s: f64,
    pub mb_per_s: f64,
    pub latency_ms: Latency,
    pub status_codes: std::collections::BTreeMap<String, u64>,
    pub rejected_reasons: std::collections::BTreeMap<String, u64>,
    pub interrupted: bool,
    pub input_error: Option<String>,
    /// Up to the first 20 skipped lines with their reasons.
    pub skipped: Vec<String>,
    pub exit_code: u8,
}

/// A message on its way to a lane.
struct Message {
    body: bytes::Bytes,
    metas: Vec<FragmentMeta>,
    entries: u64,
    /// The fragments, kept for a Loki JSON body, which `isolate` cannot
    /// take apart (a protobuf body it can); empty otherwise.
    fragments: Vec<Fragment>,
    encoding: Encoding,
}

/// What the batching thread reports when it stops.
struct BatchOutcome {
    mode: Option<Mode>,
    skipped: u64,
    skipped_examples: Vec<String>,
    input_error: Option<String>,
}

fn random_run_id() -> String {
    use rand::Rng;
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

/// Runs a push to completion (or interruption) and returns its report.
pub fn run(cfg: PushConfig) -> Result<PushReport, PushError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| PushError::Io {
            what: "starting the async runtime".into(),
            source,
        })?;
    rt.block_on(run_async(cfg))
}

async fn run_async(cfg: PushConfig) -> Result<PushReport, PushError> {
    let tool = format!("looker-push {}", env!("CARGO_PKG_VERSION"));
    let client = match cfg.target {
        Target::Loki { .. } | Target::RemoteWrite { .. } => {
            Some(crate::http::build_client(&cfg.client, &tool)?)
        }
        _ => None,
    };
    // The manifest is written from the first record on (its header needs
    // the mode); a path that cannot be written is refused before the sink
    // is opened or anything is sent.
    if let Some(p) = &cfg.manifest {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(|source| PushError::Io {
                what: format!("--manifest {}", p.display()),
                source,
            })?;
    }
    let sender = Arc::new(Sender::new(cfg.target.clone(), cfg.encoding, client)?);
    let run_id = random_run_id();

    let metrics = match cfg.metrics_addr {
        Some(addr) => {
            let m = crate::metrics::PushMetrics::new(cfg.target.kind())?;
            crate::metrics::serve_in_thread(addr, m.registry.clone()).map_err(|source| {
                PushError::Io {
                    what: format!("--metrics-addr {addr}"),
                    source,
                }
            })?;
            Some(m)
        }
        None => None,
    };
    let stats = Arc::new(Stats::new(metrics));

    // The mode is known from the target, or from the first record.
    let fixed_mode = match cfg.target {
        Target::Loki { .. } => Some(Mode::Logs),
        Target::RemoteWrite { .. } => Some(Mode::Metrics),
        _ if cfg.format == InputFormat::Raw => Some(Mode::Logs),
        _ => None,
    };
    // The manifest header needs the mode; with a file or null target and
    // NDJSON input it is only known once the first record is read, so the
    // manifest opens lazily on the first message.
    let manifest: Arc<tokio::sync::OnceCell<Option<Arc<ManifestWriter>>>> =
        Arc::new(tokio::sync::OnceCell::new());

    let stop = Arc::new(AtomicBool::new(false));
    let abandon = CancellationToken::new();
    let interrupted = Arc::new(AtomicBool::new(false));
    let fatal: Arc<std::sync::OnceLock<String>> = Arc::new(std::sync::OnceLock::new());
    spawn_signal_handler(
        stop.clone(),
        abandon.clone(),
        interrupted.clone(),
        cfg.shutdown_grace,
    );

    // Lanes.
    let messages = Arc::new(AtomicU64::new(0));
    let isolation_requests = Arc::new(AtomicU64::new(0));
    let lanes = cfg.max_concurrent_writes.max(1);
    let mut lane_tx = Vec::with_capacity(lanes);
    let mut lane_tasks = Vec::with_capacity(lanes);
    for _ in 0..lanes {
        let (tx, rx) = mpsc::channel::<(Mode, Message)>(2);
        lane_tx.push(tx);
        let ctx = LaneCtx {
            sender: sender.clone(),
            retry: cfg.retry.clone(),
            abandon: abandon.clone(),
            stats: stats.clone(),
            manifest: manifest.clone(),
            manifest_path: cfg.manifest.clone(),
            header: HeaderInfo {
                run: run_id.clone(),
                tool: tool.clone(),
                target: cfg.target.clone(),
                tenant: cfg.client.tenant.clone(),
            },
            stop: stop.clone(),
            fatal: fatal.clone(),
            messages: messages.clone(),
            isolation_requests: isolation_requests.clone(),
        };
        lane_tasks.push(tokio::spawn(lane(rx, ctx)));
    }

    // Progress ticker.
    let csv = match &cfg.report_csv {
        Some(p) => Some(std::fs::File::create(p).map_err(|source| PushError::Io {
            what: p.display().to_string(),
            source,
        })?),
        None => None,
    };
    let mut progress =
        Progress::new(csv, cfg.quiet, cfg.progress_interval).map_err(|source| PushError::Io {
            what: "--report-csv".into(),
            source,
        })?;
    let ticker_stop = CancellationToken::new();
    let ticker = {
        let stats = stats.clone();
        let stop = ticker_stop.clone();
        let every = cfg.progress_interval;
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(every);
            iv.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = iv.tick() => { let _ = progress.tick(&stats); }
                }
            }
            let _ = progress.finish(&stats);
        })
    };

    // Reader and batching threads.
    let (in_tx, in_rx) = sync_channel::<Item>(4);
    let reader = {
        let inputs = cfg.inputs.clone();
        let stop = stop.clone();
        let max_line = cfg.max_line_bytes;
        std::thread::spawn(move || input::read_sources(&inputs, max_line, &in_tx, &stop))
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    {
        let cfg = cfg.clone();
        let stats = stats.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let out = batch_thread(&cfg, fixed_mode, in_rx, lane_tx, &stats, &stop);
            let _ = done_tx.send(out);
        });
    }
    let outcome = done_rx.await.unwrap_or(BatchOutcome {
        mode: fixed_mode,
        skipped: 0,
        skipped_examples: vec![],
        input_error: Some("internal error: the batching thread stopped unexpectedly".into()),
    });
    // The reader may be blocked on a full channel; the receiver is gone now,
    // so it ends at its next send. On stdin it may block in read: don't wait.
    stop.store(true, Relaxed);
    drop(reader);
    for t in lane_tasks {
        if let Err(e) = t.await {
            // A sender that died took its in-flight message with it: the
            // run cannot claim success.
            let _ = fatal.set(format!("internal error: a sender task failed: {e}"));
        }
    }
    ticker_stop.cancel();
    let _ = ticker.await;

    let was_interrupted = interrupted.load(Relaxed);
    let mode = outcome.mode.or(fixed_mode);
    // An empty input still gets a manifest: it says nothing was pushed.
    let writer = match manifest.get() {
        Some(w) => w.clone(),
        None => match (&cfg.manifest, mode) {
            (Some(path), m) => Some(Arc::new(ManifestWriter::create(
                path,
                &make_header(
                    &HeaderInfo {
                        run: run_id.clone(),
                        tool: tool.clone(),
                        target: cfg.target.clone(),
                        tenant: cfg.client.tenant.clone(),
                    },
                    m.unwrap_or(Mode::Logs),
                ),
            )?)),
            _ => None,
        },
    };
    let fatal = fatal.get().cloned();
    if let Some(w) = &writer {
        w.set_duplicates_skipped(stats.duplicates_skipped.load(Relaxed));
        w.set_late_unchecked(stats.late_unchecked.load(Relaxed));
        let done = w.finish(
            outcome.skipped,
            was_interrupted,
            outcome.input_error.clone().or_else(|| fatal.clone()),
        );
        if fatal.is_none() {
            done?;
        }
    }
    if let Some(why) = fatal {
        return Err(PushError::Fatal(why));
    }

    let s = &stats;
    let (rejected, failed, unknown) = (
        s.entries_rejected.load(Relaxed),
        s.entries_failed.load(Relaxed),
        s.entries_unknown.load(Relaxed),
    );
    let exit = if was_interrupted {
        Exit::Interrupted
    } else if outcome.input_error.is_some() {
        Exit::Error
    } else if rejected + failed + unknown > 0 {
        Exit::Discrepancy
    } else {
        Exit::Ok
    };
    let secs = s.elapsed().as_secs_f64().max(1e-9);
    let acked = s.entries_acked.load(Relaxed);
    let bytes = s.bytes_acked.load(Relaxed);
    let report = PushReport {
        tool,
        target: cfg.target.kind().into(),
        url: cfg.target.display_url(),
        mode,
        run: run_id,
        duration_s: secs,
        entries_read: s.entries_read.load(Relaxed),
        entries_acked: acked,
        entries_rejected: rejected,
        entries_failed: failed,
        entries_unknown: unknown,
        skipped_lines: outcome.skipped,
        duplicates_skipped: s.duplicates_skipped.load(Relaxed),
        late_unchecked: s.late_unchecked.load(Relaxed),
        bytes_acked: bytes,
        requests: s.requests.load(Relaxed),
        retries: s.retries.load(Relaxed),
        entries_per_s: acked as f64 / secs,
        mb_per_s: bytes as f64 / secs / 1e6,
        latency_ms: s.percentiles(),
        status_codes: s.status_counts(),
        rejected_reasons: s.rejected_reasons(),
        interrupted: was_interrupted,
        input_error: outcome.input_error,
        skipped: outcome.skipped_examples,
        exit_code: exit as u8,
    };
    if let Some(p) = &cfg.report {
        let text = serde_json::to_vec_pretty(&report).unwrap_or_default();
        std::fs::write(p, text).map_err(|source| PushError::Io {
            what: p.display().to_string(),
            source,
        })?;
    }
    Ok(report)
}

#[derive(Clone)]
struct HeaderInfo {
    run: String,
    tool: String,
    target: Target,
    tenant: Option<String>,
}

fn make_header(h: &HeaderInfo, mode: Mode) -> Header {
    Header {
        kind: "header".into(),
        version: crate::manifest::FORMAT_VERSION,
        run: h.run.clone(),
        tool: h.tool.clone(),
        mode,
        target: h.target.kind().into(),
        url: h.target.display_url(),
        tenant: h.tenant.clone(),
        started: timefmt::format_rfc3339_ns(timefmt::now_ns()),
        hash: "xxh3-64-sum".into(),
    }
}

struct LaneCtx {
    sender: Arc<Sender>,
    retry: RetryPolicy,
    abandon: CancellationToken,
    stats: Arc<Stats>,
    manifest: Arc<tokio::sync::OnceCell<Option<Arc<ManifestWriter>>>>,
    manifest_path: Option<PathBuf>,
    header: HeaderInfo,
    stop: Arc<AtomicBool>,
    /// The first error that makes the run fail (an unwritable manifest).
    fatal: Arc<std::sync::OnceLock<String>>,
    /// Messages answered, and requests made re-sending parts of rejected
    /// ones (see `isolate`), over all lanes.
    messages: Arc<AtomicU64>,
    isolation_requests: Arc<AtomicU64>,
}

/// Sends one lane's messages in order, one at a time.
///
/// A message is sent only once its pending lines are in the manifest: if
/// the manifest cannot be written, nothing more is sent (data in the store
/// that no manifest mentions would be reported as unexpected), reading
/// stops, and the run ends with an error.
async fn lane(mut rx: mpsc::Receiver<(Mode, Message)>, ctx: LaneCtx) {
    while let Some((mode, msg)) = rx.recv().await {
        let writer = ctx
            .manifest
            .get_or_init(|| async {
                ctx.manifest_path.as_ref().and_then(|p| {
                    match ManifestWriter::create(p, &make_header(&ctx.header, mode)) {
                        Ok(w) => Some(Arc::new(w)),
                        Err(e) => {
                            ctx.fail(format!("manifest: {e}"));
                            None
                        }
                    }
                })
            })
            .await
            .clone();
        let unwritable = ctx.manifest_path.is_some() && writer.is_none();
        if ctx.abandon.is_cancelled() || unwritable || ctx.fatal.get().is_some() {
            // Never sent: nothing can have reached the store.
            let why = match ctx.fatal.get() {
                Some(f) => format!("not sent: the push stopped: {f}"),
                None => "not sent: interrupted".into(),
            };
            ctx.record(&writer, &msg, Status::Failed, 0, false, Some(&why), false);
            continue;
        }
        if let Some(w) = &writer {
            if let Err(e) = w.record(&msg.metas, Status::Pending, 0, false, None) {
                ctx.fail(format!("manifest: {e}"));
                ctx.stats.record_outcome(Status::Failed, msg.entries, None);
                continue;
            }
        }
        let d = ctx
            .sender
            .deliver(
                msg.body.clone(),
                msg.entries,
                &ctx.retry,
                &ctx.abandon,
                &ctx.stats,
            )
            .await;
        ctx.messages.fetch_add(1, Relaxed);
        let splittable = msg.metas.len() > 1
            && (msg.fragments.len() == msg.metas.len()
                || matches!(msg.encoding, Encoding::LokiProtobuf | Encoding::RemoteWrite));
        // Parts of a message refused for its credentials, tenant or URL
        // would be refused the same way: only data errors are isolated.
        if d.status == Status::Rejected && splittable && !d.access_refused && ctx.may_isolate() {
            for (part, pd) in isolate(&ctx, &msg, &d).await {
                let metas = &msg.metas[part.clone()];
                let entries = metas.iter().map(|m| m.digest.count).sum();
                ctx.record_parts(&writer, metas, entries, &pd, writer.is_some());
            }
        } else {
            ctx.record(
                &writer,
                &msg,
                d.status,
                d.attempts,
                d.maybe_duplicated,
                d.reason.as_deref(),
                writer.is_some(),
            );
        }
        // Given up on before the store ever acknowledged anything: a wrong
        // URL or a store that is down. Going on would only retry every
        // message for its whole deadline; a store that fails later in a
        // run is part of the test and is retried as usual.
        let refused = d.status == Status::Failed
            || (d.status == Status::Unknown && d.only_error_answers)
            || d.access_refused;
        if refused && !ctx.abandon.is_cancelled() && ctx.stats.entries_acked.load(Relaxed) == 0 {
            ctx.fail(format!(
                "{}: nothing was ever acknowledged; {}",
                ctx.sender.target().display_url(),
                match (d.access_refused, d.reason.as_deref()) {
                    (true, Some(r)) => format!("{r} (check the URL, --tenant and credentials)"),
                    (_, r) => r.unwrap_or("the store is unreachable").to_string(),
                }
            ));
        }
    }
}

impl LaneCtx {
    /// Records a fatal error (the first one wins) and stops reading.
    fn fail(&self, why: String) {
        let _ = self.fatal.set(why);
        self.stop.store(true, Relaxed);
    }

    /// Records a message's outcome: as one `outcome` line when its
    /// fragments are already in the manifest as `pending`, else in full.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        writer: &Option<Arc<ManifestWriter>>,
        msg: &Message,
        status: Status,
        attempts: u32,
        maybe_dup: bool,
        reason: Option<&str>,
        pending_written: bool,
    ) {
        let d = Delivery {
            status,
            only_error_answers: false,
            attempts,
            maybe_duplicated: maybe_dup,
            reason: reason.map(str::to_string),
            access_refused: false,
        };
        self.record_parts(writer, &msg.metas, msg.entries, &d, pending_written);
    }

    fn record_parts(
        &self,
        writer: &Option<Arc<ManifestWriter>>,
        metas: &[FragmentMeta],
        entries: u64,
        d: &Delivery,
        pending_written: bool,
    ) {
        let reason = d.reason.as_deref();
        self.stats.record_outcome(d.status, entries, reason);
        if let Some(w) = writer {
            let (status, attempts, maybe_dup) = (d.status, d.attempts, d.maybe_duplicated);
            let r = if pending_written {
                w.record_outcome(metas, status, attempts, maybe_dup, reason)
            } else {
                w.record(metas, status, attempts, maybe_dup, reason)
            };
            if let Err(e) = r {
                self.fail(format!("manifest: {e}"));
            }
        }
    }

    /// Whether a rejected message may be split: checked before each
    /// message, so splitting stays within about 1000 + 4 requests per
    /// message answered (plus one message's worth, up to twice its
    /// fragments), and a store that refuses everything does not multiply
    /// the run's requests.
    fn may_isolate(&self) -> bool {
        self.isolation_requests.load(Relaxed) < 1000 + 4 * self.messages.load(Relaxed)
    }
}

/// After a 400 for a message of several fragments: Loki has written every
/// valid entry of it (Mimir every valid series; Prometheus 2.42 none), and
/// the answer does not say which fragments those are. Marking them all
/// `rejected` would leave their fate unverified. Instead the message is
/// re-sent in halves, first to last (so a series' fragments keep their
/// order), until each part is acknowledged or is one rejected fragment.
///
/// A part acknowledged on its own is stored whole: a 2xx means every entry
/// of it was taken or is an exact repeat of one held (Loki with unordered
/// writes, its default, drops those; Prometheus 2.42 wrote nothing of the
/// refused request). Parts are marked `maybe_duplicated`, as the first
/// attempt may have written them too. Where a store kept part of the
/// refused request and refuses the repeat (Mimir and Prometheus take an
/// identical sample only at a series' newest timestamp), the fragment
/// stays `rejected`: no verdict is lost, none is gained. A part given up
/// on is `unknown`, never `failed`: the first attempt may have written it.
async fn isolate(
    ctx: &LaneCtx,
    msg: &Message,
    whole: &Delivery,
) -> Vec<(std::ops::Range<usize>, Delivery)> {
    let n = msg.metas.len();
    // Only for a body rebuilt from its fragments.
    let mut encoder = None;
    // A protobuf body is taken apart into its fragments' entries.
    let pieces = if msg.fragments.is_empty() {
        match crate::encode::protobuf_parts(&msg.body) {
            Some((raw, ranges)) if ranges.len() == n => Some((raw, ranges)),
            _ => return vec![(0..n, whole.clone())],
        }
    } else {
        None
    };
    let mut out = Vec::new();
    let mut todo = vec![n / 2..n, 0..n / 2];
    while let Some(part) = todo.pop() {
        if ctx.abandon.is_cancelled() {
            // Not re-sent: what the whole message's answer said holds.
            out.push((part, whole.clone()));
            continue;
        }
        let body = match &pieces {
            Some((raw, ranges)) => crate::encode::protobuf_body(raw, &ranges[part.clone()]),
            None => Some(
                encoder
                    .get_or_insert_with(|| Encoder::new(msg.encoding))
                    .encode_fragments(&msg.fragments[part.clone()]),
            ),
        };
        let Some(body) = body else {
            out.push((part, whole.clone()));
            continue;
        };
        let body = bytes::Bytes::from(body);
        let entries = msg.metas[part.clone()].iter().map(|m| m.digest.count).sum();
        ctx.isolation_requests.fetch_add(1, Relaxed);
        let mut d = ctx
            .sender
            .deliver(body, entries, &ctx.retry, &ctx.abandon, &ctx.stats)
            .await;
        d.attempts += whole.attempts;
        if d.status == Status::Rejected && part.len() > 1 {
            let mid = part.start + part.len() / 2;
            todo.push(mid..part.end);
            todo.push(part.start..mid);
            continue;
        }
        match d.status {
            Status::Ok => d.maybe_duplicated = true,
            // Given up on before an answer (429s, connection errors): the
            // first attempt at the whole message may have written it.
            Status::Failed => d.status = Status::Unknown,
            _ => {}
        }
        out.push((part, d));
    }
    out.sort_by_key(|(r, _)| r.start);
    out
}

fn spawn_signal_handler(
    stop: Arc<AtomicBool>,
    abandon: CancellationToken,
    interrupted: Arc<AtomicBool>,
    grace: Duration,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    tokio::spawn(async move {
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        interrupted.store(true, Relaxed);
        stop.store(true, Relaxed);
        eprintln!("looker-push: interrupted: finishing in-flight requests (up to {grace:?}; signal again to abandon them)");
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = tokio::time::sleep(grace) => {}
        }
        abandon.cancel();
    });
}

/// Paces, parses, batches and encodes on a plain thread: CPU-bound work
/// that should not sit on the async runtime.
fn batch_thread(
    cfg: &PushConfig,
    fixed_mode: Option<Mode>,
    rx: Receiver<Item>,
    lanes: Vec<mpsc::Sender<(Mode, Message)>>,
    stats: &Stats,
    stop: &AtomicBool,
) -> BatchOutcome {
    let mut st = BatchState {
        mode: fixed_mode,
        batcher: None,
        encoder: Encoder::new(cfg.encoding),
        table: SeriesTable::new(lanes.len(), cfg.max_series).remembering(cfg.remember_entries),
        lanes,
        out: Vec::new(),
        pacer: Pacer::new(cfg.rate.clone()),
        pace_units: 0,
        first_ts_ns: None,
        shift: 0,
        replay_start: Instant::now(),
        skipped: 0,
        skipped_examples: Vec::new(),
        input_error: None,
        cfg,
        stats,
        stop,
        raw_series: None,
        buffers: Default::default(),
        reading: None,
        last_ts_ns: i64::MIN,
        since_sweep: 0,
        read_unpublished: 0,
        started: Instant::now(),
        done: false,
    };
    if let Some(t) = stats.metrics.as_ref() {
        t.target_rate.set(st.pacer.target_rate().unwrap_or(0.0));
    }
    let tick = (cfg.limits.linger / 4).clamp(Duration::from_millis(1), Duration::from_millis(100));
    while !st.done {
        if stop.load(Relaxed) {
            break;
        }
        match rx.recv_timeout(tick) {
            Ok(Item::Block(block)) => st.block(block),
            Ok(Item::Error(e)) => {
                st.input_error = Some(e.to_string());
                break;
            }
            Err(RecvTimeoutError::Timeout) => st.sweep(),
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    if let Some(b) = st.batcher.as_mut() {
        b.flush(&mut st.out);
    }
    st.send_out();
    let unshown = st.skipped.saturating_sub(st.skipped_examples.len() as u64);
    if unshown > 0 && !cfg.quiet {
        eprintln!(
            "looker-push: skipped {unshown} more invalid lines, not shown ({} in all)",
            st.skipped
        );
    }
    if cfg.exit_after {
        std::mem::forget(std::mem::replace(&mut st.table, SeriesTable::new(1, 0)));
    }
    BatchOutcome {
        mode: st.mode,
        skipped: st.skipped,
        skipped_examples: st.skipped_examples,
        input_error: st.input_error,
    }
}

struct BatchState<'a> {
    mode: Option<Mode>,
    batcher: Option<Batcher>,
    encoder: Encoder,
    table: SeriesTable,
    lanes: Vec<mpsc::Sender<(Mode, Message)>>,
    out: Vec<Batch>,
    pacer: Pacer,
    pace_units: u32,
    first_ts_ns: Option<i64>,
    /// Added to every timestamp by --retime, in the mode's unit.
    shift: i64,
    replay_start: Instant,
    skipped: u64,
    skipped_examples: Vec<String>,
    input_error: Option<String>,
    cfg: &'a PushConfig,
    stats: &'a Stats,
    stop: &'a AtomicBool,
    raw_series: Option<u32>,
    /// The entries of the series or stream line being read, reused.
    buffers: record::series::Buffers,
    /// The series whose line is being read.
    reading: Option<u32>,
    /// Timestamp (ns) of the last entry read, for the lag gauge.
    last_ts_ns: i64,
    /// Entries accepted since the last sweep.
    since_sweep: u32,
    /// Entries read and not yet added to `stats.entries_read`.
    read_unpublished: u64,
    /// When batching started: the clock of series idleness.
    started: Instant,
    done: bool,
}

impl BatchState<'_> {
    fn block(&mut self, block: input::Block) {
        self.block_lines(block);
        self.publish_read();
    }

    fn publish_read(&mut self) {
        let n = std::mem::take(&mut self.read_unpublished);
        if n > 0 {
            self.stats.entries_read.fetch_add(n, Relaxed);
        }
    }

    fn block_lines(&mut self, block: input::Block) {
        for &(line_no, len) in &block.oversize {
            let why = self.too_long(len);
            if self.invalid(&block.source, line_no, &why) {
                return;
            }
        }
        let mut line_no = block.first_line;
        let data = &block.data;
        let mut start = 0;
        while start < data.len() {
            let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |i| start + i);
            let mut line = &data[start..end];
            // Measured as the reader measures a line it drops: everything
            // before the newline.
            let raw_len = line.len();
            start = end + 1;
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            // A byte-order mark some editors put at the start of a file.
            if line_no == 1 {
                line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
            }
            let this_line = line_no;
            line_no += 1;
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            // The reader drops only lines still growing past the limit at
            // the end of a read; one that arrived whole is held to the
            // same limit here, so the verdict on a line does not depend on
            // how the input was cut into reads.
            if raw_len > self.cfg.max_line_bytes {
                let why = self.too_long(raw_len as u64);
                if self.invalid(&block.source, this_line, &why) {
                    return;
                }
                continue;
            }
            if let Err(e) = self.line(line) {
                if self.invalid(&block.source, this_line, &e.to_string()) {
                    return;
                }
            }
            if self.done || self.stop.load(Relaxed) {
                self.done = true;
                return;
            }
        }
    }

    /// Why a line of `len` bytes is refused.
    fn too_long(&self, len: u64) -> String {
        format!(
            "line is {len} bytes, over the limit of {} (--max-line-bytes)",
            self.cfg.max_line_bytes
        )
    }

    /// Handles an invalid line; returns true if reading must stop.
    fn invalid(&mut self, source: &str, line: u64, why: &str) -> bool {
        let msg = format!("{source}:{line}: {why}");
        match self.cfg.on_invalid {
            OnInvalid::Fail => {
                self.input_error = Some(msg);
                self.done = true;
                true
            }
            OnInvalid::Skip => {
                self.skipped += 1;
                self.stats.skipped_lines.fetch_add(1, Relaxed);
                if self.skipped_examples.len() < 20 {
                    if !self.cfg.quiet {
                        eprintln!("looker-push: skipped {msg}");
                    }
                    self.skipped_examples.push(msg);
                }
                false
            }
        }
    }

    fn line(&mut self, bytes: &[u8]) -> Result<(), RecordError> {
        let text = std::str::from_utf8(bytes).map_err(|_| RecordError::Utf8)?;
        match self.cfg.format {
            InputFormat::Raw => {
                let id = match self.raw_series {
                    Some(id) => id,
                    None => {
                        let labels = self.cfg.raw_labels.clone().unwrap_or_else(|| {
                            LabelSet::new(vec![("job".into(), "looker-push".into())])
                                .unwrap_or_default()
                        });
                        let id = self.table.intern_set(labels);
                        self.raw_series = Some(id);
                        id
                    }
                };
                // Wall time at read, strictly increasing per stream.
                let prev = self.table.last[id as usize].max_ts;
                let ts = timefmt::now_ns().max(prev.saturating_add(1));
                self.accept(id, Mode::Logs, ts, Payload::Line(text.into()))
            }
            InputFormat::Ndjson => {
                let mut buf = std::mem::take(&mut self.buffers);
                let r = match record::parse_any(text, &mut buf) {
                    Ok(Line::Record(rec)) => self.record(rec),
                    Ok(Line::Series { labels_json }) => {
                        let s = &buf.samples;
                        self.many(Mode::Metrics, labels_json, s.len(), |i| {
                            (s[i].0, Payload::Value(s[i].1))
                        })
                    }
                    Ok(Line::Stream { labels_json }) => {
                        let e = &buf.entries;
                        self.many(Mode::Logs, labels_json, e.len(), |i| {
                            let (ts, line) = e.get(i);
                            (ts, Payload::Line(std::borrow::Cow::Borrowed(line)))
                        })
                    }
                    Err(e) => Err(e),
                };
                self.buffers = buf;
                r
            }
        }
    }

    /// Checks that `got` is the run's mode (the first record's).
    fn mode_of(&mut self, got: Mode) -> Result<Mode, RecordError> {
        let mode = *self.mode.get_or_insert(got);
        if got != mode {
            return Err(RecordError::WrongMode {
                expected: mode,
                got,
            });
        }
        Ok(mode)
    }

    fn record(&mut self, rec: record::RawRecord<'_>) -> Result<(), RecordError> {
        let mode = self.mode_of(rec.payload.mode())?;
        let id = self.table.intern(rec.labels_json, mode)?;
        // Pacing may wait (and sweep, and forget idle series) between
        // taking the series and batching the entry: it is in use.
        self.reading = Some(id);
        let r = self.accept(id, mode, rec.ts, rec.payload);
        self.reading = None;
        r
    }

    /// Takes the `n` entries of a series or stream line in order (entry i
    /// is `item(i)`). With --on-invalid fail a refused entry (a sample out
    /// of order) ends the line; with skip only the refused entries are left
    /// out. The entries taken stay taken, and the error names the first
    /// refused one.
    fn many<'p>(
        &mut self,
        mode: Mode,
        labels_json: &str,
        n: usize,
        item: impl Fn(usize) -> (i64, Payload<'p>),
    ) -> Result<(), RecordError> {
        let mode = self.mode_of(mode)?;
        let id = self.table.intern(labels_json, mode)?;
        // Paced, one line can take longer than a series may stay idle:
        // the series is in use until its line is read.
        self.reading = Some(id);
        let stop_at_first = self.cfg.on_invalid == OnInvalid::Fail;
        let mut first: Option<(usize, RecordError)> = None;
        let mut refused = 0;
        for i in 0..n {
            let (ts, payload) = item(i);
            if let Err(e) = self.accept(id, mode, ts, payload) {
                refused += 1;
                first.get_or_insert((i, e));
                if stop_at_first {
                    break;
                }
            }
            if i == 0 {
                if let Some(b) = self.batcher.as_mut() {
                    b.reserve(id, n - 1);
                }
            }
            // A schedule that ended, a lane that closed, or Ctrl-C during
            // a long paced line.
            if self.done || self.stop.load(Relaxed) {
                break;
            }
        }
        self.reading = None;
        match first {
            None => Ok(()),
            Some((i, e)) => Err(RecordError::InSeries {
                unit: match mode {
                    Mode::Metrics => "sample",
                    Mode::Logs => "entry",
                },
                sample: i + 1,
                of: n,
                refused,
                rest_dropped: stop_at_first,
                reason: Box::new(e),
            }),
        }
    }

    fn accept(
        &mut self,
        id: u32,
        mode: Mode,
        ts: i64,
        payload: Payload<'_>,
    ) -> Result<(), RecordError> {
        if self.batcher.is_none() {
            self.mode = Some(mode);
            // --null has no store to say which encoding: samples are
            // encoded as remote write, as a metrics store would get them.
            if mode == Mode::Metrics
                && matches!(
                    self.cfg.encoding,
                    Encoding::LokiProtobuf | Encoding::LokiJson { .. }
                )
            {
                self.encoder = Encoder::new(Encoding::RemoteWrite);
            }
            let mut batcher = Batcher::new(mode, self.cfg.limits.clone(), self.lanes.len());
            if matches!(self.cfg.encoding, Encoding::LokiJson { .. }) {
                batcher.count_json_escapes();
            }
            self.batcher = Some(batcher);
        }
        let unit = mode.ns_per_unit();
        if self.first_ts_ns.is_none() {
            self.first_ts_ns = Some(ts.saturating_mul(unit));
            if self.cfg.retime {
                self.shift = timefmt::now_ns() / unit - ts;
            }
            self.replay_start = Instant::now();
        }
        let orig_ts = ts;
        let ts = ts.saturating_add(self.shift);
        let hash = match &payload {
            Payload::Line(l) => crate::checksum::log_entry(ts, l.as_bytes()),
            Payload::Value(v) => crate::checksum::metric_sample(ts, *v),
        };
        let behind = match mode {
            Mode::Logs => self.table.behind_allowance(),
            Mode::Metrics => 0,
        };
        let last = &mut self.table.last[id as usize];
        // An entry identical (timestamp and content) to one already taken
        // is stored once, by Loki anywhere in its stream, by Prometheus at
        // the series' latest timestamp: push it once, so the manifest
        // counts what a store can hold.
        match last.repeats(ts, hash) {
            Repeat::Yes => {
                self.stats.duplicates_skipped.fetch_add(1, Relaxed);
                return Ok(());
            }
            // Only Loki keeps a repeat anywhere in a stream once; metrics
            // are checked for order below.
            Repeat::Unknown if mode == Mode::Logs => {
                self.stats.late_unchecked.fetch_add(1, Relaxed);
            }
            Repeat::Unknown | Repeat::No => {}
        }
        if mode == Mode::Metrics && ts <= last.max_ts {
            return Err(RecordError::Ts(format!(
                "{ts} is not after the previous sample of this series ({}); remote-write receivers drop or reject out-of-order samples",
                last.max_ts
            )));
        }
        last.take(ts, hash, behind);
        self.pace(orig_ts, unit, &payload);
        let Some(series) = self.table.get(id) else {
            return Err(RecordError::Json("internal error: unknown series".into()));
        };
        let batcher = self.batcher.as_mut().unwrap_or_else(|| unreachable!());
        match payload {
            Payload::Line(l) => batcher.push_line(series, id, ts, &l, hash, &mut self.out),
            Payload::Value(v) => batcher.push_value(series, id, ts, v, hash, &mut self.out),
        }
        // Counted here and published per block and sweep: an atomic add
        // per entry on a line the senders write cost 8% of push CPU.
        self.read_unpublished += 1;
        if !self.out.is_empty() {
            self.send_out();
        }
        self.last_ts_ns = ts.saturating_mul(unit);
        self.since_sweep += 1;
        if self.since_sweep >= 4096 {
            self.sweep();
        }
        Ok(())
    }

    /// Delays the record per --speed and the rate limit; never drops it.
    fn pace(&mut self, orig_ts: i64, unit: i64, payload: &Payload<'_>) {
        if let (Some(speed), Some(first)) = (self.cfg.speed, self.first_ts_ns) {
            let offset_ns = (orig_ts.saturating_mul(unit) - first).max(0) as f64 / speed;
            let due = self.replay_start + Duration::from_nanos(offset_ns as u64);
            self.wait_until(due);
        }
        if self.pacer.is_unlimited() {
            return;
        }
        let units = if self.pacer.paces_bytes() {
            match payload {
                Payload::Line(l) => l.len() as u32,
                Payload::Value(_) => 16,
            }
        } else {
            1
        };
        self.pace_units += units;
        if self.pace_units < self.pacer.chunk() {
            return;
        }
        let n = std::mem::take(&mut self.pace_units);
        loop {
            match self.pacer.poll(n) {
                Pace::Go => break,
                Pace::Wait(d) => self.wait_until(Instant::now() + d),
                Pace::Done => {
                    self.done = true;
                    break;
                }
            }
            if self.stop.load(Relaxed) {
                break;
            }
        }
        let rate = self.pacer.target_rate().unwrap_or(0.0);
        self.stats
            .target_rate_milli
            .store((rate * 1000.0) as u64, Relaxed);
        if let Some(m) = &self.stats.metrics {
            m.target_rate.set(rate);
        }
    }

    /// Sleeps until `due`, still closing lingering batches meanwhile.
    fn wait_until(&mut self, due: Instant) {
        loop {
            let now = Instant::now();
            if now >= due || self.stop.load(Relaxed) {
                return;
            }
            std::thread::sleep((due - now).min(Duration::from_millis(20)));
            self.sweep();
        }
    }

    /// Closes lingering batches and refreshes the lag gauge; runs at least
    /// every 4096 entries and on every idle tick, so both stay current at
    /// any rate.
    fn sweep(&mut self) {
        self.since_sweep = 0;
        self.publish_read();
        self.table.tick(self.started.elapsed().as_secs() as u32);
        // Series churn: above a limit, forget the least recently used
        // series, never one with entries waiting in an open fragment.
        let (batcher, reading) = (&self.batcher, self.reading);
        let forced_before = self.table.forced_out;
        self.table
            .evict(|id| reading == Some(id) || batcher.as_ref().is_some_and(|b| b.has_open(id)));
        if forced_before == 0 && self.table.forced_out > 0 && !self.cfg.quiet {
            eprintln!(
                "looker-push: more than --max-series {} series in use: the least recently used are forgotten while still in use (their labels are parsed again and their order checks start afresh); raise --max-series",
                self.cfg.max_series
            );
        }
        if self.last_ts_ns != i64::MIN {
            let lag_ms = (timefmt::now_ns() - self.last_ts_ns) / 1_000_000;
            self.stats.lag_ms.store(lag_ms, Relaxed);
            if let Some(m) = &self.stats.metrics {
                m.lag_seconds.set(lag_ms as f64 / 1000.0);
            }
        }
        if let Some(b) = self.batcher.as_mut() {
            b.sweep(Instant::now(), &mut self.out);
        }
        if !self.out.is_empty() {
            self.send_out();
        }
    }

    fn send_out(&mut self) {
        let mode = self.mode.unwrap_or(Mode::Logs);
        // Kept fragments hold the payload a second time until the store
        // answers: only where a body cannot be split (see `isolate`).
        let keep = matches!(self.cfg.target, Target::Loki { .. })
            && matches!(self.encoder.encoding(), Encoding::LokiJson { .. });
        for batch in std::mem::take(&mut self.out) {
            let body = bytes::Bytes::from(self.encoder.encode(&batch));
            let msg = Message {
                body,
                entries: batch.entries as u64,
                metas: batch.metas,
                fragments: if keep && batch.fragments.len() > 1 {
                    batch.fragments
                } else {
                    Vec::new()
                },
                encoding: self.encoder.encoding(),
            };
            // Blocks while the lane is busy: this is the backpressure.
            if self.lanes[batch.lane].blocking_send((mode, msg)).is_err() {
                self.done = true;
            }
        }
    }
}
