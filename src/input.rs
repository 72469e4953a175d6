//! Reading input: files (plain or gzip, detected by content) or stdin, cut
//! into blocks of whole lines on a reader thread so that parsing never
//! waits on I/O and linger timers keep firing while input is idle.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

/// Where input comes from.
#[derive(Debug, Clone)]
pub enum Source {
    Stdin,
    File(PathBuf),
}

impl Source {
    pub fn from_arg(s: &str) -> Source {
        if s == "-" {
            Source::Stdin
        } else {
            Source::File(PathBuf::from(s))
        }
    }

    pub fn name(&self) -> String {
        match self {
            Source::Stdin => "<stdin>".into(),
            Source::File(p) => p.display().to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{name}: {source}")]
    Open {
        name: String,
        source: std::io::Error,
    },
    #[error("{name}:{line}: read error: {source}")]
    Read {
        name: String,
        line: u64,
        source: std::io::Error,
    },
}

/// A block of complete lines from one source.
#[derive(Debug)]
pub struct Block {
    pub source: Arc<str>,
    /// Line number (1-based) of the first line in `data`.
    pub first_line: u64,
    /// Whole lines, each ending in `\n` (the last line of a source may lack it).
    pub data: Vec<u8>,
    /// Lines longer than the limit, reported instead of buffered:
    /// (line number, length seen). They all come before the lines in
    /// `data`, which are numbered consecutively from `first_line`.
    pub oversize: Vec<(u64, u64)>,
}

pub enum Item {
    Block(Block),
    Error(InputError),
}

const BLOCK: usize = 256 * 1024;

/// Reads every source in order and sends blocks of lines. A line longer
/// than `max_line` is not buffered; it is skipped and reported in
/// `Block::oversize`, so one huge line cannot exhaust memory. Returns when
/// all input is read, the receiver hangs up, or an error was sent.
pub fn read_sources(
    sources: &[Source],
    max_line: usize,
    tx: &SyncSender<Item>,
    stop: &std::sync::atomic::AtomicBool,
) {
    for src in sources {
        let name: Arc<str> = Arc::from(src.name());
        let reader: Box<dyn Read + Send> = match open(src) {
            Ok(r) => r,
            Err(source) => {
                let _ = tx.send(Item::Error(InputError::Open {
                    name: name.to_string(),
                    source,
                }));
                return;
            }
        };
        if !read_one(reader, &name, max_line, tx, stop) {
            return;
        }
    }
}

fn open(src: &Source) -> std::io::Result<Box<dyn Read + Send>> {
    let raw: Box<dyn Read + Send> = match src {
        Source::Stdin => Box::new(std::io::stdin()),
        Source::File(p) => {
            let f = File::open(p)?;
            if f.metadata()?.is_dir() {
                return Err(std::io::Error::other("is a directory"));
            }
            Box::new(f)
        }
    };
    let mut br = BufReader::with_capacity(BLOCK, raw);
    let head = br.fill_buf()?;
    if head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(br)))
    } else {
        Ok(Box::new(br))
    }
}

/// Returns false if reading should stop (error sent, receiver gone, or stop).
fn read_one(
    mut r: Box<dyn Read + Send>,
    name: &Arc<str>,
    max_line: usize,
    tx: &SyncSender<Item>,
    stop: &std::sync::atomic::AtomicBool,
) -> bool {
    let mut line_no: u64 = 1; // number of the first line in `buf`
    let mut buf: Vec<u8> = Vec::with_capacity(BLOCK * 2);
    let mut oversize: Vec<(u64, u64)> = Vec::new();
    // While skipping an oversize line: how many bytes of it we have seen.
    let mut skipping: Option<u64> = None;
    let mut chunk = vec![0u8; BLOCK];
    loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        let n = match r.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                // Send the lines completed before the error, then the error;
                // a partial last line is not a record.
                let complete = memchr::memrchr(b'\n', &buf).map_or(0, |i| i + 1);
                buf.truncate(complete);
                let lines = bytecount_newlines(&buf);
                let _ = send_block(tx, name, line_no, &mut buf, &mut oversize, true);
                let _ = tx.send(Item::Error(InputError::Read {
                    name: name.to_string(),
                    line: line_no + lines,
                    source,
                }));
                return false;
            }
        };
        let mut data = &chunk[..n];
        if let Some(seen) = skipping.as_mut() {
            match memchr(b'\n', data) {
                Some(i) => {
                    *seen += i as u64;
                    oversize.push((line_no, *seen));
                    line_no += 1;
                    skipping = None;
                    data = &data[i + 1..];
                }
                None => {
                    *seen += data.len() as u64;
                    continue;
                }
            }
        }
        buf.extend_from_slice(data);
        // Cut at the last newline; keep the partial line for the next read.
        let partial_start = match memchr::memrchr(b'\n', &buf) {
            Some(i) => i + 1,
            None => 0,
        };
        if buf.len() - partial_start > max_line {
            // The tail line is already over the limit: drop it and skip
            // the rest of it as it arrives.
            let seen = (buf.len() - partial_start) as u64;
            buf.truncate(partial_start);
            let lines = bytecount_newlines(&buf);
            if !send_block(tx, name, line_no, &mut buf, &mut oversize, true) {
                return false;
            }
            line_no += lines;
            skipping = Some(seen);
            continue;
        }
        if partial_start >= BLOCK || (!oversize.is_empty() && partial_start > 0) {
            let tail = buf.split_off(partial_start);
            let lines = bytecount_newlines(&buf);
            if !send_block(tx, name, line_no, &mut buf, &mut oversize, true) {
                return false;
            }
            line_no += lines;
            buf = tail;
            buf.reserve(BLOCK * 2);
        }
    }
    if let Some(seen) = skipping {
        oversize.push((line_no, seen));
    }
    send_block(tx, name, line_no, &mut buf, &mut oversize, false)
}

fn send_block(
    tx: &SyncSender<Item>,
    name: &Arc<str>,
    first_line: u64,
    buf: &mut Vec<u8>,
    oversize: &mut Vec<(u64, u64)>,
    _more: bool,
) -> bool {
    if buf.is_empty() && oversize.is_empty() {
        return true;
    }
    let block = Block {
        source: name.clone(),
        first_line,
        data: std::mem::take(buf),
        oversize: std::mem::take(oversize),
    };
    tx.send(Item::Block(block)).is_ok()
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr(needle, hay)
}

fn bytecount_newlines(b: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', b).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc::sync_channel;

    type Collected = (Vec<(u64, String)>, Vec<(u64, u64)>, Option<String>);

    fn collect(bytes: Vec<u8>, max_line: usize) -> Collected {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in");
        std::fs::write(&p, bytes).unwrap();
        let (tx, rx) = sync_channel(1000);
        let stop = AtomicBool::new(false);
        read_sources(&[Source::File(p)], max_line, &tx, &stop);
        drop(tx);
        let (mut lines, mut over, mut err) = (vec![], vec![], None);
        for item in rx {
            match item {
                Item::Block(b) => {
                    over.extend(b.oversize.iter().copied());
                    // Line numbering skips the oversize lines that precede
                    // each line.
                    let mut n = b.first_line;
                    for l in b.data.split_inclusive(|&c| c == b'\n') {
                        while over.iter().any(|(o, _)| *o == n) {
                            n += 1;
                        }
                        lines.push((n, String::from_utf8_lossy(l).trim_end().to_string()));
                        n += 1;
                    }
                }
                Item::Error(e) => err = Some(e.to_string()),
            }
        }
        (lines, over, err)
    }

    #[test]
    fn reads_lines_with_numbers_and_no_final_newline() {
        let (lines, over, err) = collect(b"a\nb\nc".to_vec(), 100);
        assert_eq!(
            lines,
            vec![(1, "a".into()), (2, "b".into()), (3, "c".into())]
        );
        assert!(over.is_empty() && err.is_none());
    }

    #[test]
    fn gzip_is_detected_by_content() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"x\ny\n").unwrap();
        let (lines, _, err) = collect(enc.finish().unwrap(), 100);
        assert_eq!(lines.len(), 2);
        assert!(err.is_none());
    }

    #[test]
    fn corrupt_gzip_is_an_error_naming_the_file() {
        let mut bytes = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
        bytes.extend_from_slice(&[0xff; 64]);
        let (_, _, err) = collect(bytes, 100);
        let err = err.expect("error");
        assert!(err.contains("/in:1: read error"), "{err}");
    }

    #[test]
    fn oversize_lines_are_reported_not_buffered() {
        let mut bytes = b"ok1\n".to_vec();
        bytes.extend(std::iter::repeat_n(b'x', 3 * BLOCK));
        bytes.extend_from_slice(b"\nok3\n");
        let (lines, over, err) = collect(bytes, 1000);
        assert!(err.is_none());
        assert_eq!(over, vec![(2, 3 * BLOCK as u64)]);
        assert_eq!(lines, vec![(1, "ok1".into()), (3, "ok3".into())]);
    }

    #[test]
    fn missing_file_names_it() {
        let (tx, rx) = sync_channel(10);
        read_sources(
            &[Source::File("/nonexistent/x.ndjson".into())],
            100,
            &tx,
            &AtomicBool::new(false),
        );
        drop(tx);
        let msg = match rx.recv().unwrap() {
            Item::Error(e) => e.to_string(),
            _ => panic!(),
        };
        assert!(msg.starts_with("/nonexistent/x.ndjson: "), "{msg}");
    }
}
