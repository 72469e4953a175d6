//! Running the tools the way operators do: several sharded pushers at once
//! whose manifests are merged for one verification, and a long-running push
//! watched through its metrics endpoint and progress lines, then stopped
//! with SIGTERM.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::servers::http_get;
use crate::util::*;

fn json_file(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("file written")).expect("JSON file")
}

/// The label sets of all records, each as its canonical JSON object.
fn series_of(records: &[u8]) -> BTreeSet<String> {
    String::from_utf8_lossy(records)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("record is not JSON ({e}): {l:?}"));
            assert!(v["labels"].is_object(), "record without labels: {l}");
            // serde_json maps are ordered by key, so this is canonical.
            v["labels"].to_string()
        })
        .collect()
}

/// Waits for `child` for up to `limit`; kills it and panics if it is still
/// running then.
fn wait_bounded(child: &mut Child, what: &str, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `looker-gen ARGS | looker-push ARGS` as two processes joined by a pipe.
fn spawn_pipeline(gen_args: &[&str], push_args: &[&str]) -> (Child, Child) {
    let mut gen = bin("looker-gen")
        .args(gen_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn looker-gen");
    let gen_out = gen.stdout.take().expect("gen stdout");
    let push = bin("looker-push")
        .args(push_args)
        .stdin(Stdio::from(gen_out))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn looker-push");
    (gen, push)
}

const SHARDS: usize = 3;

#[test]
fn three_concurrent_shards_merge_into_exactly_the_unsharded_run() {
    let dir = tempfile::tempdir().unwrap();
    let base = [
        "--seed",
        "11",
        "--start-time",
        "2024-01-01T00:00:00Z",
        "--invocation-id",
        "shardtest",
        "--n-series",
        "10",
        "--count",
        "4000",
    ];
    // All three pushers append to one file sink. Each message is one
    // write(2) on an O_APPEND descriptor, which Linux applies whole to a
    // local file, so records of different processes never interleave.
    let sink = dir.path().join("sink.ndjson");
    let manifests: Vec<_> = (0..SHARDS)
        .map(|i| dir.path().join(format!("m-{i}.ndjson")))
        .collect();

    let mut running = Vec::new();
    for (i, man) in manifests.iter().enumerate() {
        let shard = format!("{i}/{SHARDS}");
        let mut gen_args = base.to_vec();
        gen_args.extend(["--shard", &shard]);
        // Small messages so the three pushers' appends alternate often.
        let push_args = [
            "--file",
            s(&sink),
            "--manifest",
            s(man),
            "--fragment-size",
            "100",
            "--fragments-per-message",
            "2",
            "-q",
        ];
        running.push(spawn_pipeline(&gen_args, &push_args));
    }
    for (i, (mut gen, push)) in running.into_iter().enumerate() {
        let out = push.wait_with_output().expect("wait looker-push");
        assert!(
            out.status.success(),
            "shard {i}: looker-push {:?}: {}",
            out.status,
            stderr(&out)
        );
        assert!(
            out.stdout.is_empty(),
            "shard {i}: looker-push wrote to stdout"
        );
        let st = wait_bounded(&mut gen, "looker-gen", Duration::from_secs(60));
        assert!(st.success(), "shard {i}: looker-gen {st:?}");
    }

    // The union of the shards is the unsharded run: same series, and the
    // same records (the file sink stores records as read).
    let whole = gen(&base);
    let n_whole = whole.iter().filter(|&&b| b == b'\n').count() as u64;
    assert_eq!(n_whole, 10 * 4000);
    let stored = std::fs::read(&sink).unwrap();
    let series = series_of(&stored);
    assert_eq!(series, series_of(&whole));
    assert_eq!(series.len(), 10);
    assert!(
        series
            .iter()
            .all(|l| l.contains("\"invocation\":\"shardtest\"")),
        "{series:?}"
    );
    assert_eq!(lines_sorted(&stored), lines_sorted(&whole));

    // Each shard acknowledged its own slice; together, everything once.
    let mut runs = BTreeSet::new();
    let mut acked = 0u64;
    let mut shard_series: Vec<BTreeSet<String>> = Vec::new();
    for (i, man) in manifests.iter().enumerate() {
        let t = trailer(man);
        assert_eq!(t["interrupted"], false, "shard {i}");
        let ok = t["entries"]["ok"].as_u64().expect("entries.ok");
        assert!(ok > 0, "shard {i} acknowledged nothing");
        acked += ok;
        let text = std::fs::read_to_string(man).unwrap();
        let header: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(header["kind"], "header", "shard {i}");
        runs.insert(header["run"].as_str().expect("run id").to_string());
        shard_series.push(
            manifest_fragments(man)
                .iter()
                .map(|v| v["labels"].to_string())
                .collect(),
        );
    }
    assert_eq!(acked, n_whole);
    assert_eq!(
        runs.len(),
        SHARDS,
        "every pusher has its own run id: {runs:?}"
    );
    for i in 0..SHARDS {
        for j in i + 1..SHARDS {
            assert!(
                shard_series[i].is_disjoint(&shard_series[j]),
                "shards {i} and {j} share series"
            );
        }
    }

    // One verification of the concatenated manifests...
    let all = dir.path().join("all.ndjson");
    let mut cat = Vec::new();
    for m in &manifests {
        cat.extend(std::fs::read(m).unwrap());
    }
    std::fs::write(&all, cat).unwrap();
    let rep = dir.path().join("r-cat.json");
    let o = verify(&[
        "--manifest",
        s(&all),
        "--file",
        s(&sink),
        "--report",
        s(&rep),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = json_file(&rep);
    assert_eq!(r["verdict"], "ok");
    assert_eq!(r["series_checked"], 10);
    assert_eq!(r["entries_expected"], n_whole);
    assert_eq!(r["entries_found"], n_whole);

    // ...and of the three manifests given separately agree.
    let rep3 = dir.path().join("r-3.json");
    let mut args = Vec::new();
    for m in &manifests {
        args.extend(["--manifest", s(m)]);
    }
    args.extend(["--file", s(&sink), "--report", s(&rep3)]);
    let o = verify(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r3 = json_file(&rep3);
    for k in [
        "verdict",
        "series_checked",
        "fragments_checked",
        "entries_expected",
        "entries_found",
    ] {
        assert_eq!(r3[k], r[k], "{k}");
    }

    // A merge that leaves one shard out does not pass: the sink then holds
    // series no manifest accounts for.
    let o = verify(&[
        "--manifest",
        s(&manifests[0]),
        "--manifest",
        s(&manifests[1]),
        "--file",
        s(&sink),
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

/// Collects everything a child writes to one of its pipes.
fn drain(mut r: impl Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = buf.clone();
    let h = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => b.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    });
    (buf, h)
}

/// Sum of the samples of `name` whose labels contain every one of `labels`
/// (`k="v"`); None when there is no such sample.
fn sample(body: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, lbls) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name || !labels.iter().all(|l| lbls.split(',').any(|x| x == *l)) {
            continue;
        }
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad sample value: {line}"));
        *found.get_or_insert(0.0) += v;
    }
    found
}

/// A child that is killed if the test ends (or fails) while it runs.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn metrics_endpoint_and_progress_lines_of_a_running_push_then_sigterm() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let base = format!("http://{addr}");
    // Endless input far in the past: generated as fast as the pipe takes it,
    // paced by looker-push.
    let (gen, push) = spawn_pipeline(
        &[
            "--count",
            "0",
            "--start-time",
            "2024-01-01T00:00:00Z",
            "--seed",
            "5",
            "--n-series",
            "4",
        ],
        &[
            "--null",
            "--rate",
            "2000",
            "--metrics-addr",
            &addr,
            "--progress-interval",
            "200ms",
        ],
    );
    let (mut gen, mut push) = (KillOnDrop(gen), KillOnDrop(push));
    let (out, out_h) = drain(push.0.stdout.take().unwrap());
    let (err, err_h) = drain(push.0.stderr.take().unwrap());
    let (gen_err, gen_err_h) = drain(gen.0.stderr.take().unwrap());

    // Scrape until acknowledged entries and the entry lag (updated every
    // 4096 entries read) show up; bounded, not timed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut scrapes: Vec<String> = Vec::new();
    let mut last_err = String::new();
    while Instant::now() < deadline {
        match http_get(&base, "/metrics") {
            Ok((200, body)) => {
                let acked = sample(&body, "looker_push_entries_total", &["outcome=\"acked\""])
                    .unwrap_or(0.0);
                let lag = sample(&body, "looker_push_entry_lag_seconds", &[]).unwrap_or(0.0);
                let grew = scrapes.last().map_or(true, |prev| {
                    acked
                        > sample(prev, "looker_push_entries_total", &["outcome=\"acked\""])
                            .unwrap_or(0.0)
                });
                if acked > 0.0 && grew {
                    scrapes.push(body);
                    if scrapes.len() >= 3 && lag > 0.0 {
                        break;
                    }
                }
            }
            Ok((code, body)) => last_err = format!("HTTP {code}: {body}"),
            Err(e) => last_err = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if scrapes.len() < 3 {
        panic!(
            "no three growing scrapes within the deadline (last error: {last_err}); stderr: {}",
            String::from_utf8_lossy(&err.lock().unwrap())
        );
    }
    let body = scrapes.last().unwrap().clone();
    let acked = sample(
        &body,
        "looker_push_entries_total",
        &["outcome=\"acked\"", "target=\"null\""],
    );
    assert!(
        acked.is_some_and(|v| v > 0.0),
        "acked entries, labelled with the target: {body}"
    );
    let requests =
        sample(&body, "looker_push_requests_total", &[]).expect("looker_push_requests_total");
    assert!(requests >= 1.0, "{body}");
    assert_eq!(
        sample(&body, "looker_push_requests_total", &["code=\"204\""]),
        Some(requests),
        "the null sink answers 204: {body}"
    );
    let inf = sample(
        &body,
        "looker_push_request_duration_seconds_bucket",
        &["le=\"+Inf\""],
    )
    .expect("+Inf bucket");
    let count =
        sample(&body, "looker_push_request_duration_seconds_count", &[]).expect("histogram count");
    assert!(
        count >= 1.0 && inf == count,
        "+Inf bucket {inf} vs count {count}: {body}"
    );
    let in_flight = sample(&body, "looker_push_requests_in_flight", &[])
        .expect("looker_push_requests_in_flight");
    assert!(
        (0.0..=10.0).contains(&in_flight),
        "in flight {in_flight} (at most --max-concurrent-writes 10)"
    );
    assert_eq!(
        sample(&body, "looker_push_target_rate", &[]),
        Some(2000.0),
        "{body}"
    );
    let lag =
        sample(&body, "looker_push_entry_lag_seconds", &[]).expect("looker_push_entry_lag_seconds");
    // Entries are from January 2024: more than a year behind now.
    assert!(lag > 365.0 * 86400.0, "lag {lag}s");
    let first = sample(
        &scrapes[0],
        "looker_push_entries_total",
        &["outcome=\"acked\""],
    )
    .unwrap();
    assert!(
        acked.unwrap() > first,
        "the acked counter grows while the push runs"
    );

    // Progress lines arrive on stderr every 200ms; wait for one (bounded).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&err.lock().unwrap()).contains("entries/s")
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let progress = String::from_utf8_lossy(&err.lock().unwrap()).into_owned();
    assert!(
        progress.contains("entries/s"),
        "no progress line on stderr: {progress}"
    );
    assert!(progress.contains("target 2000/s"), "{progress}");

    // SIGTERM: push finishes what is in flight and exits 130; looker-gen
    // then sees its reader gone and ends quietly.
    let pid = libc::pid_t::try_from(push.0.id()).unwrap();
    // SAFETY: kill(2) on the pid of a child we have not reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let st = wait_bounded(
        &mut push.0,
        "looker-push after SIGTERM",
        Duration::from_secs(20),
    );
    assert_eq!(st.code(), Some(130), "{st:?}");
    let gst = wait_bounded(
        &mut gen.0,
        "looker-gen after its reader exited",
        Duration::from_secs(20),
    );
    assert!(
        gst.success(),
        "looker-gen {gst:?}: {}",
        String::from_utf8_lossy(&gen_err.lock().unwrap())
    );
    for h in [out_h, err_h, gen_err_h] {
        h.join().unwrap();
    }
    assert!(
        out.lock().unwrap().is_empty(),
        "stdout: {:?}",
        String::from_utf8_lossy(&out.lock().unwrap())
    );
    let stderr_text = String::from_utf8_lossy(&err.lock().unwrap()).into_owned();
    assert!(
        stderr_text.contains("looker-push: interrupted"),
        "{stderr_text}"
    );
    assert!(
        stderr_text.contains("entries acknowledged"),
        "summary line: {stderr_text}"
    );
    // After exit the endpoint is gone.
    assert!(
        http_get(&base, "/metrics").is_err(),
        "metrics still served after exit"
    );
}

/// Scrapes `base`/metrics until `ready` accepts a body; bounded in time.
fn scrape_until(base: &str, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        match http_get(base, "/metrics") {
            Ok((200, body)) if ready(&body) => return body,
            Ok((code, body)) => last = format!("HTTP {code}: {body}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not seen within the deadline; last scrape: {last}");
}

/// looker-gen's metrics say which side sets the pace: a reader that does
/// not read shows as time blocked on writing; wall-time coupling shows as
/// time waiting, with the entry lag within --min-lag..--max-lag.
#[test]
fn gen_metrics_tell_a_stalled_reader_from_waiting_for_wall_time() {
    // A reader far slower than the generator: writes block.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut gen = bin("looker-gen")
        .args([
            "--count",
            "0",
            "--seed",
            "1",
            "--start-time",
            "2024-01-01T00:00:00Z",
        ])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = gen.stdout.take().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slow = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if out.read(&mut buf).unwrap_or(0) == 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let gen = KillOnDrop(gen);
    let body = scrape_until(&base, "time blocked on the reader", |b| {
        sample(b, "looker_gen_write_blocked_seconds_total", &[]).is_some_and(|v| v > 0.5)
    });
    let records = sample(&body, "looker_gen_records_total", &[]).unwrap();
    let bytes = sample(&body, "looker_gen_bytes_total", &[]).unwrap();
    assert!(records > 0.0 && bytes > records * 50.0, "{body}");
    assert_eq!(
        sample(&body, "looker_gen_wait_seconds_total", &[]),
        Some(0.0),
        "{body}"
    );
    let lag = sample(&body, "looker_gen_entry_lag_seconds", &[]).unwrap();
    assert!(lag > 365.0 * 86400.0, "entries from 2024: lag {lag}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(gen);
    let _ = slow.join();

    // Coupled to wall time, one entry per second per series: mostly waiting.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut gen = bin("looker-gen")
        .args(["--count", "0", "--n-series", "2", "--time-increment", "1s"])
        .args(["--min-lag", "2s", "--max-lag", "20s"])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (_out, _h) = drain(gen.stdout.take().unwrap());
    let _gen = KillOnDrop(gen);
    let body = scrape_until(&base, "time waiting for wall time", |b| {
        sample(b, "looker_gen_wait_seconds_total", &[]).is_some_and(|v| v > 1.0)
    });
    let lag = sample(&body, "looker_gen_entry_lag_seconds", &[]).unwrap();
    assert!(
        (1.5..=21.0).contains(&lag),
        "lag {lag}s outside --min-lag..--max-lag"
    );
}

/// looker-verify's metrics while it waits (--wait) for a series that is
/// short of entries: what it planned, read, and how many series still fail.
#[test]
fn verify_metrics_show_reads_and_failing_series_while_it_waits() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, man) = (dir.path().join("sink.ndjson"), dir.path().join("m.ndjson"));
    let input = gen(&[
        "--n-series",
        "3",
        "--count",
        "50",
        "--seed",
        "2",
        "--start-time",
        "2024-01-01T00:00:00Z",
    ]);
    let o = push(&["--file", s(&sink), "--manifest", s(&man), "-q"], &input);
    assert!(o.status.success(), "{}", stderr(&o));
    // The store loses the last entry.
    let text = std::fs::read_to_string(&sink).unwrap();
    let kept: Vec<&str> = text.lines().collect();
    std::fs::write(&sink, kept[..kept.len() - 1].join("\n") + "\n").unwrap();

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut v = bin("looker-verify")
        .args([
            "--manifest",
            s(&man),
            "--file",
            s(&sink),
            "--wait",
            "60s",
            "-q",
        ])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (_e, _h) = drain(v.stderr.take().unwrap());
    let _v = KillOnDrop(v);
    let body = scrape_until(&base, "a second pass over the failing series", |b| {
        sample(b, "looker_verify_series_read_total", &[]).is_some_and(|v| v >= 4.0)
    });
    assert_eq!(
        sample(&body, "looker_verify_series", &["target=\"file\""]),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "looker_verify_series_with_discrepancies", &[]),
        Some(1.0),
        "{body}"
    );
    let entries = sample(&body, "looker_verify_entries_read_total", &[]).unwrap();
    assert!(entries >= 149.0, "{body}");
}
