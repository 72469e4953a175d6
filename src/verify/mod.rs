//! Reads data back from a store and checks it against manifests.
//!
//! Every series in the manifests is planned ([`check::SeriesPlan`]), read
//! from the store over its manifest time range in time order, and each
//! returned entry is folded into a [`check::SeriesChecker`], which keeps
//! only per-fragment-group digests. Findings are what differs; the verdict
//! fails only on findings about acknowledged data.

pub mod check;
#[cfg(test)]
mod fake_tests;
pub mod file;
pub mod loki;
pub mod prom;
pub mod report;
pub mod vm;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::exit::Exit;
use crate::http::ClientArgs;
use crate::manifest;
use crate::record::Mode;

use check::{Precision, Seen, SeriesChecker, SeriesPlan, SeriesResult};

/// How `looker-verify` reads a Prometheus-compatible store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadApi {
    /// Instant range queries on /api/v1/query (raw samples).
    Query,
    /// Prometheus remote read on /api/v1/read.
    RemoteRead,
}

/// Where the data to check is.
#[derive(Debug, Clone)]
pub enum Target {
    Loki(String),
    Prometheus(String, ReadApi),
    VictoriaMetrics(String),
    File(PathBuf),
}

impl Target {
    /// The kind of store, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Loki(_) => "loki",
            Target::Prometheus(..) => "prometheus",
            Target::VictoriaMetrics(_) => "victoriametrics",
            Target::File(_) => "file",
        }
    }

    fn mode(&self) -> Option<Mode> {
        match self {
            Target::Loki(_) => Some(Mode::Logs),
            Target::Prometheus(..) | Target::VictoriaMetrics(_) => Some(Mode::Metrics),
            Target::File(_) => None,
        }
    }

    /// A printable name, without credentials.
    pub fn describe(&self) -> String {
        match self {
            Target::Loki(u) => format!("loki {}", crate::http::redact_url(u)),
            Target::Prometheus(u, ReadApi::Query) => {
                format!("prometheus {}", crate::http::redact_url(u))
            }
            Target::Prometheus(u, ReadApi::RemoteRead) => {
                format!("prometheus remote read {}", crate::http::redact_url(u))
            }
            Target::VictoriaMetrics(u) => {
                format!("victoriametrics {}", crate::http::redact_url(u))
            }
            Target::File(p) => format!("file {}", p.display()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub manifests: Vec<PathBuf>,
    pub target: Target,
    pub client: ClientArgs,
    /// Entries per Loki query.
    pub query_limit: usize,
    pub max_concurrent_reads: usize,
    /// Check only this many series, chosen at random with `seed`.
    pub sample_series: Option<usize>,
    pub seed: u64,
    /// Re-check series with discrepancies until they pass or this elapses.
    pub wait: Duration,
    /// Print a progress line on stderr this often while reading a store.
    pub progress: Option<Duration>,
    /// Serve Prometheus metrics of the verification here.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The process ends when the verification does: leave the plans for
    /// the operating system to take back (freeing 100,000 series' plans
    /// one by one was a tenth of a file-sink verification).
    pub exit_after: bool,
}

/// Counters behind the progress line and the metrics.
#[derive(Default)]
struct Progress {
    series: AtomicU64,
    entries: AtomicU64,
    metrics: Option<crate::metrics::VerifyMetrics>,
}

/// The result of a verification that could be carried out.
#[derive(Debug)]
pub struct Outcome {
    pub report: report::Report,
    pub exit: Exit,
}

/// A reader of one series from an HTTP store.
pub enum Reader {
    Loki(loki::LokiReader),
    Query(prom::QueryReader),
    RemoteRead(prom::RemoteReader),
    Vm(vm::VmReader),
}

/// Receives entries in time order.
pub type Sink<'a> = dyn FnMut(Seen) + Send + 'a;

/// Receives entries of several series: the series' index in the batch, and
/// the entry; each series' entries in time order.
pub type BatchSink<'a> = dyn FnMut(usize, Seen) + Send + 'a;

/// Windows covering every series of a batch, each holding about
/// `WINDOW_SAMPLES` expected entries of all of them together. For one
/// series these are the windows it is read in alone.
pub(crate) fn batch_windows(plans: &[Arc<SeriesPlan>]) -> Vec<(i64, i64)> {
    let mut spans: Vec<(i64, i64, u64)> = plans.iter().flat_map(|p| p.spans()).collect();
    spans.sort_unstable();
    let mut merged: Vec<(i64, i64, u64)> = Vec::with_capacity(spans.len());
    for (a, b, n) in spans {
        match merged.last_mut() {
            Some(m) if a <= m.1 => {
                m.1 = m.1.max(b);
                m.2 += n;
            }
            _ => merged.push((a, b, n)),
        }
    }
    prom::tile(&merged, prom::WINDOW_SAMPLES)
}

/// Hands each series of a batch its samples of the window `[a, b]`, cut
/// to the window and to the series' own range (as reading it alone would),
/// in time order.
pub(crate) fn emit_batch(
    per_series: Vec<Vec<(i64, f64)>>,
    plans: &[Arc<SeriesPlan>],
    (a, b): (i64, i64),
    sink: &mut BatchSink<'_>,
) {
    for (k, (samples, plan)) in per_series.into_iter().zip(plans).enumerate() {
        let Some((first, last)) = plan.range() else {
            continue;
        };
        let (lo, hi) = (a.max(first), b.min(last));
        for (ts, v) in samples {
            if lo <= ts && ts <= hi {
                sink(k, Seen::sample(ts, v));
            }
        }
    }
}

impl Reader {
    pub fn new(
        target: &Target,
        client: reqwest::Client,
        query_limit: usize,
    ) -> anyhow::Result<Reader> {
        Ok(match target {
            Target::Loki(u) => Reader::Loki(loki::LokiReader::new(client, u, query_limit)?),
            Target::Prometheus(u, ReadApi::Query) => {
                Reader::Query(prom::QueryReader::new(client, u)?)
            }
            Target::Prometheus(u, ReadApi::RemoteRead) => {
                Reader::RemoteRead(prom::RemoteReader::new(client, u)?)
            }
            Target::VictoriaMetrics(u) => Reader::Vm(vm::VmReader::new(client, u)?),
            Target::File(_) => bail!("a file is not read per series"),
        })
    }

    /// How exactly the store keeps values: VictoriaMetrics as decimals,
    /// the others bit for bit.
    pub fn precision(&self) -> Precision {
        match self {
            Reader::Vm(_) => Precision::Decimal,
            _ => Precision::Exact,
        }
    }

    /// Called before each pass over the series.
    pub async fn prepare(&self) {
        if let Reader::Vm(r) = self {
            r.force_flush().await;
        }
    }

    /// How many series one read takes: VictoriaMetrics' export and remote
    /// read take several per request; Loki and instant queries one.
    pub fn batch_size(&self) -> usize {
        match self {
            // Each series is a match[] in the URL: keep it short.
            Reader::Vm(_) => 32,
            Reader::RemoteRead(_) => 64,
            // Series differing in one label only, by a regex on it.
            Reader::Query(_) => 64,
            Reader::Loki(_) => 1,
        }
    }

    /// Reads each series over its whole planned range, in time order.
    pub async fn read_batch(
        &self,
        plans: &[Arc<SeriesPlan>],
        sink: &mut BatchSink<'_>,
    ) -> anyhow::Result<()> {
        match self {
            Reader::Vm(r) => r.read_batch(plans, sink).await,
            Reader::RemoteRead(r) => r.read_batch(plans, sink).await,
            Reader::Loki(r) => {
                for (k, plan) in plans.iter().enumerate() {
                    r.read(plan, &mut |e| sink(k, e)).await?;
                }
                Ok(())
            }
            Reader::Query(r) => r.read_batch(plans, sink).await,
        }
    }
}

/// Builds the base URL joined with `path`, keeping any path prefix the user
/// gave (e.g. `/prometheus` for Mimir).
pub(crate) fn endpoint(base: &str, path: &str) -> anyhow::Result<reqwest::Url> {
    let url = format!("{}{}", base.trim_end_matches('/'), path);
    let parsed = reqwest::Url::parse(&url)
        .with_context(|| format!("invalid URL {:?}", crate::http::redact_url(base)))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        bail!(
            "invalid URL {:?}: expected http or https",
            crate::http::redact_url(base)
        );
    }
    Ok(parsed)
}

/// Loki 3 adds a `service_name` derived from a stream's labels when it
/// has none, so a series pushed without one and the same labels pushed
/// with the value Loki derives are one stream there. Read as two, each
/// would take the other's entries for unexpected ones: the second is read
/// as part of the first (whose reader also takes the stream Loki derived).
fn merge_discovered_service_names(
    series: &mut std::collections::BTreeMap<crate::labels::LabelSet, Vec<manifest::Fragment>>,
) {
    let with: Vec<crate::labels::LabelSet> = series
        .keys()
        .filter(|l| {
            l.get("service_name").is_some_and(|v| {
                let base = l.without("service_name");
                series.contains_key(&base) && loki::could_be_discovered_service_name(&base, v)
            })
        })
        .cloned()
        .collect();
    for l in with {
        if let Some(frags) = series.remove(&l) {
            if let Some(into) = series.get_mut(&l.without("service_name")) {
                into.extend(frags);
                into.sort_by_key(|f| f.first_ts);
            }
        }
    }
}

/// Retries of one request on answers that say "try again".
const RETRIES: u32 = 3;

/// Sends a request, retrying connection errors, timeouts, 429 and 5xx with
/// backoff, and returns the body of a 2xx answer. Other answers become an
/// error carrying the status and the start of the body (stores put their
/// reason there).
pub(crate) async fn send(
    build: impl Fn() -> reqwest::RequestBuilder,
    what: &str,
) -> anyhow::Result<bytes::Bytes> {
    let mut delay = Duration::from_millis(500);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let last = attempt > RETRIES;
        match build().send().await {
            Ok(resp) => {
                let status = resp.status();
                let body = match resp.bytes().await {
                    Ok(b) => b,
                    // Cut off mid-body: the same as a dropped connection.
                    Err(_) if !last => {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                        continue;
                    }
                    Err(e) => {
                        return Err(anyhow!(
                            "{what}: reading the response: {}",
                            crate::exit::describe(&e)
                        ))
                    }
                };
                if status.is_success() {
                    return Ok(body);
                }
                // A response over a gRPC message cap inside the store
                // fails the same way every time: the caller may ask for
                // less.
                let retryable =
                    (status.as_u16() == 429 || status.is_server_error()) && !too_large(&body);
                if retryable && !last {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    continue;
                }
                return Err(anyhow!("{what}: HTTP {status}: {}", snippet(&body)));
            }
            Err(e) if !last && (e.is_connect() || e.is_timeout() || e.is_request()) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => return Err(anyhow!("{what}: {}", crate::exit::describe(&e))),
        }
    }
}

/// Whether an error body says the answer was over a gRPC message cap
/// between the store's own components (Loki's querier and frontend:
/// "grpc: received message larger than max (N vs. 4194304)").
pub(crate) fn too_large(body: &[u8]) -> bool {
    const SAYS: &[u8] = b"larger than max (";
    body.windows(SAYS.len()).any(|w| w == SAYS)
}

/// The start of a response body, as text, for error messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(600)]);
    let t = text.trim();
    if t.is_empty() {
        "(empty body)".into()
    } else if body.len() > 600 {
        format!("{t}...")
    } else {
        t.to_string()
    }
}

/// Picks the series to check: all, or `n` at random (seeded, so a run can
/// be repeated).
pub fn sample(total: usize, n: Option<usize>, seed: u64) -> Vec<usize> {
    match n {
        Some(n) if n < total => {
            use rand::SeedableRng;
            let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
            let mut v = rand::seq::index::sample(&mut rng, total, n).into_vec();
            v.sort_unstable();
            v
        }
        _ => (0..total).collect(),
    }
}

/// Splits the series to read into batches of at most the reader's batch
/// size. Series read together share windows, so they are batched in order
/// of where their ranges start, and a batch ends where the next series
/// starts after every range in it ends (no window spans a gap between
/// unrelated series). Instant queries can only batch series differing in
/// one label: series are first grouped by their label names, then, within
/// such a group, by all labels but the one with most values.
fn batches(reader: &Reader, plans: &[Arc<SeriesPlan>], which: &[usize]) -> Vec<Vec<usize>> {
    let mut order = which.to_vec();
    order.sort_by_key(|&i| plans[i].range().map(|r| r.0));
    let size = reader.batch_size().max(1);
    let groups: Vec<Vec<usize>> = if matches!(reader, Reader::Query(_)) && size > 1 {
        let mut by_names: Vec<Vec<usize>> = Vec::new();
        let mut names_at: std::collections::HashMap<Vec<&str>, usize> = Default::default();
        for &i in &order {
            let names: Vec<&str> = plans[i]
                .labels
                .pairs()
                .iter()
                .map(|(k, _)| k.as_str())
                .collect();
            let g = *names_at.entry(names).or_insert_with(|| {
                by_names.push(Vec::new());
                by_names.len() - 1
            });
            by_names[g].push(i);
        }
        by_names
            .into_iter()
            .flat_map(|g| group_by_all_but_one(plans, g))
            .collect()
    } else {
        vec![order]
    };
    let mut out = Vec::new();
    for group in groups {
        let mut chunk: Vec<usize> = Vec::new();
        let mut end = i64::MIN;
        for i in group {
            let (first, last) = plans[i].range().unwrap_or((i64::MIN, i64::MIN));
            if chunk.len() >= size || (!chunk.is_empty() && first > end) {
                out.push(std::mem::take(&mut chunk));
                end = i64::MIN;
            }
            chunk.push(i);
            end = end.max(last);
        }
        if !chunk.is_empty() {
            out.push(chunk);
        }
    }
    out
}

/// Splits series with the same label names into groups that differ only in
/// the label with the most distinct values, keeping their order.
fn group_by_all_but_one(plans: &[Arc<SeriesPlan>], series: Vec<usize>) -> Vec<Vec<usize>> {
    let mut values: std::collections::HashMap<&str, BTreeSet<&str>> = Default::default();
    for &i in &series {
        for (k, v) in plans[i].labels.pairs() {
            values.entry(k.as_str()).or_default().insert(v.as_str());
        }
    }
    let Some(vary) = values
        .iter()
        .max_by_key(|(k, vs)| (vs.len(), std::cmp::Reverse(*k)))
        .map(|(k, _)| *k)
    else {
        return series.into_iter().map(|i| vec![i]).collect();
    };
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_rest: std::collections::HashMap<Vec<(&str, &str)>, usize> = Default::default();
    for &i in &series {
        let rest: Vec<(&str, &str)> = plans[i]
            .labels
            .pairs()
            .iter()
            .filter(|(k, _)| k != vary)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let g = *by_rest.entry(rest).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    groups
}

/// Checks the given series concurrently; fails on the first series that
/// cannot be read.
async fn check_series(
    reader: &Arc<Reader>,
    plans: &[Arc<SeriesPlan>],
    which: &[usize],
    concurrency: usize,
    progress: &Arc<Progress>,
) -> anyhow::Result<Vec<(usize, SeriesResult)>> {
    reader.prepare().await;
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set: JoinSet<anyhow::Result<Vec<(usize, SeriesResult)>>> = JoinSet::new();
    let mut out = Vec::with_capacity(which.len());
    let collect =
        |r: Result<anyhow::Result<Vec<(usize, SeriesResult)>>, tokio::task::JoinError>,
         out: &mut Vec<(usize, SeriesResult)>| {
            match r {
                Ok(Ok(v)) => {
                    out.extend(v);
                    Ok(())
                }
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow!("a read task failed: {e}")),
            }
        };
    for chunk in batches(reader, plans, which) {
        let chunk = chunk.as_slice();
        let permit = sem.clone().acquire_owned().await?;
        let reader = reader.clone();
        let ids = chunk.to_vec();
        let batch: Vec<Arc<SeriesPlan>> = chunk.iter().map(|&i| plans[i].clone()).collect();
        let progress = progress.clone();
        set.spawn(async move {
            let _permit = permit;
            let precision = reader.precision();
            let mut checkers: Vec<SeriesChecker> = batch
                .iter()
                .map(|p| SeriesChecker::new(p.clone()).with_precision(precision))
                .collect();
            let mut n = 0u64;
            let t = Instant::now();
            reader
                .read_batch(&batch, &mut |k, e| {
                    n += 1;
                    checkers[k].observe(e)
                })
                .await
                .with_context(|| match batch.as_slice() {
                    [one] => format!("reading series {}", one.labels),
                    more => format!(
                        "reading {} series ({} and others)",
                        more.len(),
                        more[0].labels
                    ),
                })?;
            progress.entries.fetch_add(n, Ordering::Relaxed);
            progress
                .series
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            if let Some(m) = &progress.metrics {
                let each = t.elapsed().as_secs_f64() / batch.len() as f64;
                for _ in &batch {
                    m.read_duration.observe(each);
                }
                m.entries_read.inc_by(n);
                m.series_read.inc_by(batch.len() as u64);
            }
            Ok(ids
                .into_iter()
                .zip(checkers)
                .map(|(i, c)| (i, c.finish()))
                .collect())
        });
        while let Some(r) = set.try_join_next() {
            collect(r, &mut out)?;
        }
    }
    while let Some(r) = set.join_next().await {
        collect(r, &mut out)?;
    }
    Ok(out)
}

/// A task aborted when this is dropped.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            t.abort();
        }
    }
}

/// Reads and checks the series `todo` once. For the file sink, also what
/// the pass saw besides them: series no manifest mentions, and bad lines.
async fn read_round(
    opts: &Options,
    mode: Mode,
    reader: &Option<Arc<Reader>>,
    all: &[Arc<SeriesPlan>],
    todo: &[usize],
    progress: &Arc<Progress>,
) -> anyhow::Result<(
    Vec<(usize, SeriesResult)>,
    Option<(Vec<check::Finding>, u64, Option<(u64, String)>)>,
)> {
    match (&opts.target, reader) {
        (Target::File(path), _) => {
            let only: BTreeSet<usize> = todo.iter().copied().collect();
            let out = file::check_file(path, mode, all, &only)?;
            if let Some(m) = &progress.metrics {
                m.series_read.inc_by(out.results.len() as u64);
                m.entries_read
                    .inc_by(out.results.iter().map(|(_, r)| r.found).sum());
            }
            Ok((
                out.results,
                Some((out.unexpected_series, out.bad_lines, out.first_bad)),
            ))
        }
        (_, Some(reader)) => {
            let done = check_series(reader, all, todo, opts.max_concurrent_reads, progress).await?;
            Ok((done, None))
        }
        (_, None) => bail!("no reader for {}", opts.target.describe()),
    }
}

/// Runs a verification. An `Err` means it could not be carried out.
pub async fn run(opts: &Options) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    // VictoriaMetrics rounds values: merged runs of small fragments would
    // widen the tolerance of its value check (see `manifest::load`).
    let merge_small = !matches!(opts.target, Target::VictoriaMetrics(_));
    let mut loaded = manifest::load(&opts.manifests, merge_small)?;
    let mode = loaded.mode.unwrap_or(Mode::Logs);
    if let Some(want) = opts.target.mode() {
        if loaded.mode.is_some() && want != mode {
            bail!(
                "the manifests describe {} but {} holds {}",
                mode_name(mode),
                opts.target.describe(),
                mode_name(want)
            );
        }
    }
    if matches!(opts.target, Target::Loki { .. }) {
        merge_discovered_service_names(&mut loaded.series);
    }
    // VictoriaMetrics drops NaN values on ingest (with a 204): expect each
    // fragment without its NaN samples there.
    let drops_nan = matches!(opts.target, Target::VictoriaMetrics(_));
    let mut nan_dropped = 0u64;
    // Consumed series by series, so the manifest's fragments and the plans'
    // copies of them are not both held in full.
    let mut all: Vec<Arc<SeriesPlan>> = std::mem::take(&mut loaded.series)
        .into_iter()
        .map(|(labels, frags)| {
            let frags: Vec<_> = if drops_nan {
                frags
                    .into_iter()
                    .map(|f| {
                        nan_dropped += f.nan.map_or(0, |n| n.count);
                        f.without_nan()
                    })
                    .collect()
            } else {
                frags
            };
            Arc::new(SeriesPlan::from_fragments(labels, frags))
        })
        .collect();
    let chosen = sample(all.len(), opts.sample_series, opts.seed);
    let mut notes = Vec::new();
    if nan_dropped > 0 {
        notes.push(format!(
            "{nan_dropped} acknowledged NaN samples are not expected: VictoriaMetrics drops NaN values on ingest"
        ));
    }
    if chosen.len() < all.len() {
        notes.push(format!(
            "checked a random sample of {} of {} series (seed {})",
            chosen.len(),
            all.len(),
            opts.seed
        ));
    }
    if all.is_empty() {
        notes.push("the manifests record no fragments: nothing to check".into());
    }
    for (run, n) in &loaded.late_unchecked {
        notes.push(format!(
            "run {run} took {n} log entries from further back in time than it remembered their series, unchecked for repeating earlier input: Loki keeps a repeated entry once, so against Loki any that was one reads as missing here"
        ));
    }
    for run in &loaded.unfinished_runs {
        notes.push(format!(
            "run {run} has no trailer: the push did not finish; fragments without an outcome are treated as unknown"
        ));
    }

    let mut results: Vec<Option<SeriesResult>> = vec![None; all.len()];
    let mut strangers = Vec::new();
    let deadline = started + opts.wait;
    let mut todo = chosen.clone();
    let reader = match &opts.target {
        Target::File(_) => None,
        t => {
            let client = crate::http::build_client(
                &opts.client,
                concat!("looker-verify/", env!("CARGO_PKG_VERSION")),
            )?;
            Some(Arc::new(Reader::new(t, client, opts.query_limit)?))
        }
    };
    let metrics = match opts.metrics_addr {
        Some(addr) => {
            let m = crate::metrics::VerifyMetrics::new(opts.target.kind())?;
            crate::metrics::serve_in_thread(addr, m.registry.clone())
                .with_context(|| format!("--metrics-addr {addr}"))?;
            m.series_planned.set(chosen.len() as i64);
            Some(m)
        }
        None => None,
    };
    let progress = Arc::new(Progress {
        metrics,
        ..Progress::default()
    });
    // Stops the progress line when dropped, on every way out.
    let ticker = AbortOnDrop(match (opts.progress, &opts.target) {
        (Some(every), t) if !matches!(t, Target::File(_)) => {
            let progress = progress.clone();
            let total = chosen.len();
            Some(tokio::spawn(async move {
                let mut iv = tokio::time::interval(every);
                iv.tick().await;
                loop {
                    iv.tick().await;
                    let secs = started.elapsed().as_secs_f64().max(1e-9);
                    let entries = progress.entries.load(Ordering::Relaxed);
                    eprintln!(
                        "looker-verify: {}/{total} series read, {entries} entries ({:.0}/s)",
                        progress.series.load(Ordering::Relaxed),
                        entries as f64 / secs
                    );
                }
            }))
        }
        _ => None,
    });
    let mut first = true;
    loop {
        let (done, file_extras) = read_round(opts, mode, &reader, &all, &todo, &progress).await?;
        for (i, r) in done {
            results[i] = Some(r);
        }
        if let (true, Some((unexpected_series, bad_lines, first_bad))) = (first, file_extras) {
            strangers = unexpected_series;
            if let (Target::File(path), Some((line, why))) = (&opts.target, first_bad) {
                notes.push(format!(
                    "{bad_lines} lines of {} are not records of this mode and were not read (the first, line {line}: {why}); if pushed entries were among them, they count as missing",
                    path.display()
                ));
            }
        }
        first = false;
        keep_failing(&mut todo, &results, &progress);
        if todo.is_empty() || Instant::now() >= deadline {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
    }
    // A merged run is judged as one fragment: an entry altered in one of
    // its parts would be reported only if nothing else in the run were
    // missing. Series that fail are read once more with their fragments
    // as pushed, so their findings are those of an unmerged reading.
    // When most of many series fail (a wrong tenant, an empty store), the
    // merged findings already say what is missing; reading everything
    // again would cost the memory merging saved.
    let refine: Vec<usize> = todo
        .iter()
        .copied()
        .filter(|&i| all[i].has_merged())
        .collect();
    if refine.len() > 1000 && refine.len() * 2 > chosen.len() {
        notes.push(format!(
            "{} of {} series fail: their runs of small fragments are reported as read, not fragment by fragment",
            refine.len(),
            chosen.len()
        ));
    } else if !refine.is_empty() {
        let saved: Vec<Arc<SeriesPlan>> = refine.iter().map(|&i| all[i].clone()).collect();
        for &i in &refine {
            all[i] = Arc::new(all[i].unmerged());
        }
        match read_round(opts, mode, &reader, &all, &refine, &progress).await {
            Ok((done, _)) => {
                for (i, r) in done {
                    results[i] = Some(r);
                }
                keep_failing(&mut todo, &results, &progress);
            }
            // The first reading's findings stand.
            Err(e) => {
                for (&i, plan) in refine.iter().zip(saved) {
                    all[i] = plan;
                }
                notes.push(format!(
                    "reading failing series again fragment by fragment failed ({e:#}); their findings are per run of small fragments"
                ));
            }
        }
    }
    drop(ticker);
    if !todo.is_empty() && !opts.wait.is_zero() {
        notes.push(format!(
            "{} series still had discrepancies after waiting {}",
            todo.len(),
            humantime::format_duration(opts.wait)
        ));
    }

    let checked: Vec<(&SeriesPlan, SeriesResult)> = chosen
        .iter()
        .filter_map(|&i| Some((all[i].as_ref(), results[i].take()?)))
        .collect();
    let report = report::Report::build(
        mode,
        &opts.target.describe(),
        &checked,
        strangers,
        notes,
        started.elapsed(),
    );
    drop(checked);
    if opts.exit_after {
        std::mem::forget(all);
    }
    let exit = if report.discrepancies() > 0 {
        Exit::Discrepancy
    } else {
        Exit::Ok
    };
    Ok(Outcome { report, exit })
}

/// Keeps in `todo` the series whose latest result has a discrepancy, and
/// shows their number.
fn keep_failing(todo: &mut Vec<usize>, results: &[Option<SeriesResult>], progress: &Progress) {
    todo.retain(|&i| {
        results[i]
            .as_ref()
            .is_some_and(SeriesResult::has_discrepancy)
    });
    if let Some(m) = &progress.metrics {
        m.series_failing.set(todo.len() as i64);
    }
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Logs => "logs",
        Mode::Metrics => "metrics",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_prefixes_and_reject_other_schemes() {
        assert_eq!(
            endpoint("http://h:3100/", "/loki/api/v1/query_range")
                .unwrap()
                .as_str(),
            "http://h:3100/loki/api/v1/query_range"
        );
        assert_eq!(
            endpoint("https://h/prometheus", "/api/v1/read")
                .unwrap()
                .as_str(),
            "https://h/prometheus/api/v1/read"
        );
        assert!(endpoint("ftp://h", "/x").is_err());
        assert!(endpoint("not a url", "/x").is_err());
    }

    #[test]
    fn sampling_is_seeded_sorted_and_bounded() {
        let a = sample(100, Some(10), 7);
        assert_eq!(a.len(), 10);
        assert_eq!(a, sample(100, Some(10), 7));
        assert_ne!(a, sample(100, Some(10), 8));
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(sample(3, Some(10), 1), vec![0, 1, 2]);
        assert_eq!(sample(3, None, 1), vec![0, 1, 2]);
    }

    /// Reading series together gives each exactly what reading it alone
    /// gives: for random series (several fragments, gaps, far apart in
    /// time) in a store holding a sample every 7 ms around each one, the
    /// batched windows and cuts hand each series the same samples, in the
    /// same order, as its own windows.
    #[test]
    fn batched_reads_give_each_series_what_reading_it_alone_gives() {
        use crate::labels::LabelSet;
        use crate::manifest::{Fragment, Status};
        let mut rng = crate::gen::rng::Rng::new(4, 0, 0);
        let fragment = |id: u64, first: i64, last: i64, count: u64| Fragment {
            run: Arc::from("r"),
            id,
            status: Status::Ok,
            count,
            first_ts: first,
            last_ts: last,
            step: None,
            checksum: 0,
            checksum12: None,
            nan: None,
            edges: None,
            values: None,
            maybe_duplicated: false,
            attempts: 1,
            reason: None,
            merged: None,
        };
        for round in 0..40 {
            let plans: Vec<Arc<SeriesPlan>> = (0..1 + rng.below(12))
                .map(|k| {
                    let labels = LabelSet::new(vec![("s".into(), format!("{round}-{k}"))]).unwrap();
                    let mut t = rng.below(3) as i64 * 5_000_000 + rng.below(100_000) as i64;
                    let frags: Vec<Fragment> = (0..1 + rng.below(5))
                        .map(|f| {
                            let len = 1 + rng.below(50_000) as i64;
                            let count = 1 + rng.below(8_000);
                            let fr = fragment(f, t, t + len, count);
                            t += len + rng.below(3) as i64 * rng.below(200_000) as i64 + 1;
                            fr
                        })
                        .collect();
                    Arc::new(SeriesPlan::new(labels, &frags))
                })
                .collect();
            // What the store holds of series k in [a, b].
            let stored = |k: usize, a: i64, b: i64| -> Vec<(i64, f64)> {
                let (first, last) = plans[k].range().unwrap();
                let (lo, hi) = ((first - 50).max(a), (last + 50).min(b));
                (lo..=hi)
                    .filter(|t| t % 7 == 0)
                    .map(|t| (t, k as f64))
                    .collect()
            };
            let mut together: Vec<Vec<i64>> = vec![Vec::new(); plans.len()];
            let windows = batch_windows(&plans);
            for w in windows.windows(2) {
                assert_eq!(w[0].1 + 1, w[1].0, "windows are contiguous");
            }
            for &(a, b) in &windows {
                let per: Vec<Vec<(i64, f64)>> = (0..plans.len()).map(|k| stored(k, a, b)).collect();
                emit_batch(per, &plans, (a, b), &mut |k, e| together[k].push(e.ts));
            }
            for (k, plan) in plans.iter().enumerate() {
                let mut alone = Vec::new();
                for (a, b) in prom::tile(&plan.spans(), prom::WINDOW_SAMPLES) {
                    alone.extend(stored(k, a, b).into_iter().map(|s| s.0));
                }
                assert_eq!(together[k], alone, "round {round}, series {k}");
            }
        }
    }

    /// Every series is read exactly once; query batches hold series that
    /// differ in one label only; no batch spans a gap between ranges.
    #[test]
    fn batches_cover_every_series_once_and_query_batches_differ_in_one_label() {
        use crate::labels::LabelSet;
        use crate::manifest::{Fragment, Status};
        let plan = |pairs: &[(&str, &str)], first: i64, last: i64| {
            let labels = LabelSet::new(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
            .unwrap();
            let f = Fragment {
                run: Arc::from("r"),
                id: 1,
                status: Status::Ok,
                count: 2,
                first_ts: first,
                last_ts: last,
                step: None,
                checksum: 0,
                checksum12: None,
                nan: None,
                edges: None,
                values: None,
                maybe_duplicated: false,
                attempts: 1,
                reason: None,
                merged: None,
            };
            Arc::new(SeriesPlan::new(labels, &[f]))
        };
        let mut plans = Vec::new();
        for m in 0..3 {
            for s in 0..100 {
                let (m, s) = (format!("m{m}"), format!("s{s}"));
                plans.push(plan(&[("__name__", &m), ("series", &s)], 1000, 2000));
            }
        }
        // Other label names, a far-apart range, and two labels varying at once.
        plans.push(plan(
            &[("__name__", "m0"), ("series", "x"), ("extra", "1")],
            1000,
            2000,
        ));
        plans.push(plan(
            &[("__name__", "m0"), ("series", "late")],
            50_000,
            60_000,
        ));
        plans.push(plan(&[("__name__", "other"), ("series", "y")], 1000, 2000));
        let which: Vec<usize> = (0..plans.len()).collect();
        let client = reqwest::Client::new();
        for target in [
            Target::Prometheus("http://127.0.0.1:9".into(), ReadApi::Query),
            Target::Prometheus("http://127.0.0.1:9".into(), ReadApi::RemoteRead),
            Target::VictoriaMetrics("http://127.0.0.1:9".into()),
        ] {
            let reader = Reader::new(&target, client.clone(), 100).unwrap();
            let b = batches(&reader, &plans, &which);
            let mut all: Vec<usize> = b.iter().flatten().copied().collect();
            all.sort_unstable();
            assert_eq!(all, which, "{target:?}: each series once");
            assert!(b
                .iter()
                .all(|c| !c.is_empty() && c.len() <= reader.batch_size()));
            for c in &b {
                let ranges: Vec<_> = c.iter().map(|&i| plans[i].range().unwrap()).collect();
                assert!(
                    !(c.len() > 1
                        && ranges.iter().any(|r| r.0 >= 50_000)
                        && ranges.iter().any(|r| r.1 <= 2000)),
                    "{target:?}: a batch spans the gap"
                );
                if matches!(target, Target::Prometheus(_, ReadApi::Query)) && c.len() > 1 {
                    let batch: Vec<Arc<SeriesPlan>> = c.iter().map(|&i| plans[i].clone()).collect();
                    assert!(
                        prom::varying_label(&batch).is_some(),
                        "{:?}",
                        batch
                            .iter()
                            .map(|p| p.labels.to_selector())
                            .collect::<Vec<_>>()
                    );
                }
            }
            if matches!(target, Target::Prometheus(_, ReadApi::Query)) {
                // 300 series of 3 names in batches of 64: far fewer batches than series.
                assert!(b.len() < 20, "{}", b.len());
            }
        }
    }
}
