//! Time for generated entries: a per-series timeline of strictly increasing
//! timestamps, and its optional loose coupling to wall time.
//!
//! All values here are in the mode's native unit (ns for logs, ms for
//! metrics) so that a timestamp never has to be rounded on output, and an
//! increment of at least one unit always yields a strictly larger value.

use std::time::Duration;

use super::rng::Rng;

/// Where "now" comes from. A parameter, not a global, so the lag logic can
/// be driven deterministically.
pub trait Clock {
    /// Unix nanoseconds.
    fn now_ns(&mut self) -> i64;
    fn sleep(&mut self, d: Duration);
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&mut self) -> i64 {
        crate::timefmt::now_ns()
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// A clock that moves only when slept on or set, for tests and for
/// reproducing a run at a chosen instant.
#[derive(Debug, Clone, Copy)]
pub struct ManualClock {
    pub now_ns: i64,
}

impl Clock for ManualClock {
    fn now_ns(&mut self) -> i64 {
        self.now_ns
    }

    fn sleep(&mut self, d: Duration) {
        self.now_ns = self
            .now_ns
            .saturating_add(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    }
}

/// The window behind wall time that coupled series are kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    /// Entries never get closer to now than this (stores reject or
    /// mis-order samples from the future or from "just now" races).
    pub min: i64,
    /// Series further behind than this leap forward (stores reject samples
    /// that are too old: Prometheus about 1h behind its newest sample).
    pub max: i64,
}

/// What a coupled series may do at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ready,
    /// Too close to now: wait this many units.
    Wait(i64),
    /// Fallen too far behind: leap to a new [`Lag::place`].
    Behind,
}

impl Lag {
    /// A random point in `[now - max, now - min)`.
    pub fn place(&self, now: i64, rng: &mut Rng) -> i64 {
        let span = (self.max - self.min).max(1) as u64;
        now - self.max + rng.below(span) as i64
    }

    pub fn check(&self, ts: i64, now: i64) -> Verdict {
        if ts > now - self.min {
            Verdict::Wait(ts - (now - self.min))
        } else if ts < now - self.max {
            Verdict::Behind
        } else {
            Verdict::Ready
        }
    }
}

/// The timestamps of one series.
#[derive(Debug, Clone)]
pub struct Timeline {
    next: i64,
    /// Exclusive end of the series' synthetic time (`--duration`).
    end: Option<i64>,
    duration: Option<i64>,
    increment: i64,
    jitter: i64,
}

impl Timeline {
    /// `increment` must be at least 1 so timestamps strictly increase.
    pub fn new(first: i64, increment: i64, jitter: i64, duration: Option<i64>) -> Timeline {
        Timeline {
            next: first,
            end: duration.map(|d| first.saturating_add(d)),
            duration,
            increment: increment.max(1),
            jitter: jitter.max(0),
        }
    }

    pub fn next(&self) -> i64 {
        self.next
    }

    pub fn finished(&self) -> bool {
        self.end.is_some_and(|end| self.next >= end)
    }

    pub fn advance(&mut self, rng: &mut Rng) {
        let extra = if self.jitter > 0 {
            rng.below(self.jitter as u64) as i64
        } else {
            0
        };
        self.next = self.next.saturating_add(self.increment + extra);
    }

    /// Moves the series forward to `ts` (only ever forward). A leap spends
    /// the skipped time from `--duration`, as if the entries had been sent.
    pub fn leap(&mut self, ts: i64) {
        if ts > self.next {
            self.next = ts;
        }
    }

    /// Restarts the timeline at `first` (used once, when the coupled start
    /// point is known) keeping the duration.
    pub fn restart(&mut self, first: i64) {
        self.next = first;
        self.end = self.duration.map(|d| first.saturating_add(d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_strictly_increase_even_with_jitter() {
        let mut rng = Rng::new(7, 0, 0);
        let mut t = Timeline::new(1_000, 1, 5, None);
        let mut prev = i64::MIN;
        for _ in 0..10_000 {
            assert!(t.next() > prev);
            prev = t.next();
            t.advance(&mut rng);
        }
    }

    #[test]
    fn jitter_adds_less_than_its_bound() {
        let mut rng = Rng::new(1, 2, 3);
        let mut t = Timeline::new(0, 10, 4, None);
        let mut saw_extra = false;
        for _ in 0..1000 {
            let before = t.next();
            t.advance(&mut rng);
            let step = t.next() - before;
            assert!((10..14).contains(&step), "{step}");
            saw_extra |= step > 10;
        }
        assert!(saw_extra);
    }

    #[test]
    fn duration_bounds_synthetic_time() {
        let mut rng = Rng::new(1, 0, 0);
        let mut t = Timeline::new(100, 10, 0, Some(50));
        let mut n = 0;
        while !t.finished() {
            n += 1;
            t.advance(&mut rng);
        }
        assert_eq!(n, 5);
    }

    #[test]
    fn lag_window_waits_and_leaps() {
        let lag = Lag { min: 10, max: 100 };
        let mut rng = Rng::new(3, 0, 0);
        let now = 1_000;
        for _ in 0..1000 {
            let p = lag.place(now, &mut rng);
            assert!((900..990).contains(&p), "{p}");
        }
        assert_eq!(lag.check(990, now), Verdict::Ready);
        assert_eq!(lag.check(900, now), Verdict::Ready);
        assert_eq!(lag.check(995, now), Verdict::Wait(5));
        assert_eq!(lag.check(899, now), Verdict::Behind);
    }

    #[test]
    fn manual_clock_moves_only_when_slept_on() {
        let mut c = ManualClock { now_ns: 5 };
        assert_eq!(c.now_ns(), 5);
        c.sleep(Duration::from_nanos(10));
        assert_eq!(c.now_ns(), 15);
    }
}
