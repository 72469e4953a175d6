//! Pacing: a fixed rate, or a schedule that changes the rate over time.
//!
//! Two schedule files are understood:
//! - steps (the Netacea format): `{"update_interval": 3, "schedule": [10, 20, 5]}`
//!   holds each rate for `update_interval` seconds and cycles forever;
//! - stages (as k6 ramps): `{"stages":[{"duration":"30s","target":1000}, ...]}`
//!   ramps linearly from the previous target (0 at first) to each target
//!   over its duration; the run ends after the last stage.
//!
//! Fixed rates are enforced with `governor`; a schedule by its integral
//! (the units due so far), which keeps ramps exact. Pacing only delays; it
//! never drops.

use std::num::NonZeroU32;
use std::path::Path;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// A rate that changes over time.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    Steps { interval: Duration, rates: Vec<f64> },
    Stages(Vec<Stage>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub duration: Duration,
    pub target: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepsFile {
    update_interval: f64,
    schedule: Vec<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StagesFile {
    stages: Vec<StageFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StageFile {
    duration: String,
    target: f64,
}

impl Schedule {
    pub fn load(path: &Path) -> Result<Schedule, ScheduleError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScheduleError::Read {
            path: name.clone(),
            source,
        })?;
        Schedule::parse(&text).map_err(|reason| ScheduleError::Invalid { path: name, reason })
    }

    pub fn parse(text: &str) -> Result<Schedule, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        let check_rate = |r: f64| {
            if r.is_finite() && r >= 0.0 {
                Ok(r)
            } else {
                Err(format!("rate {r} must be a finite number >= 0"))
            }
        };
        if v.get("stages").is_some() {
            let f: StagesFile =
                serde_json::from_value(v).map_err(|e| format!("invalid stages schedule: {e}"))?;
            if f.stages.is_empty() {
                return Err("\"stages\" is empty".into());
            }
            let mut stages = Vec::new();
            for (i, s) in f.stages.into_iter().enumerate() {
                let duration = crate::timefmt::parse_duration(&s.duration)
                    .map_err(|e| format!("stage {}: {e}", i + 1))?;
                stages.push(Stage {
                    duration,
                    target: check_rate(s.target).map_err(|e| format!("stage {}: {e}", i + 1))?,
                });
            }
            Ok(Schedule::Stages(stages))
        } else if v.get("schedule").is_some() {
            let f: StepsFile =
                serde_json::from_value(v).map_err(|e| format!("invalid steps schedule: {e}"))?;
            if !(f.update_interval.is_finite() && f.update_interval > 0.0) {
                return Err("\"update_interval\" must be a positive number of seconds".into());
            }
            if f.schedule.is_empty() {
                return Err("\"schedule\" is empty".into());
            }
            let rates = f
                .schedule
                .into_iter()
                .map(check_rate)
                .collect::<Result<_, _>>()?;
            Ok(Schedule::Steps {
                interval: Duration::from_secs_f64(f.update_interval),
                rates,
            })
        } else {
            Err("expected {\"update_interval\":N,\"schedule\":[...]} or {\"stages\":[...]}".into())
        }
    }

    /// Units due by `t` after the start (the integral of the rate), or
    /// None once the schedule has ended (stages only).
    pub fn area(&self, t: Duration) -> Option<f64> {
        let t = t.as_secs_f64();
        match self {
            Schedule::Steps { interval, rates } => {
                let step = interval.as_secs_f64();
                let cycle = step * rates.len() as f64;
                let per_cycle: f64 = rates.iter().sum::<f64>() * step;
                let cycles = (t / cycle).floor();
                let mut left = t - cycles * cycle;
                let mut area = cycles * per_cycle;
                for r in rates {
                    let d = left.min(step);
                    area += r * d;
                    left -= d;
                    if left <= 0.0 {
                        break;
                    }
                }
                Some(area)
            }
            Schedule::Stages(stages) => {
                let (mut from, mut left, mut area) = (0.0, t, 0.0);
                for s in stages {
                    let d = s.duration.as_secs_f64();
                    if left < d {
                        let to = from + (s.target - from) * (left / d);
                        return Some(area + (from + to) / 2.0 * left);
                    }
                    area += (from + s.target) / 2.0 * d;
                    left -= d;
                    from = s.target;
                }
                (left <= 0.0).then_some(area)
            }
        }
    }

    /// The target rate at `t` after the start, or None once the schedule
    /// has ended (stages only).
    pub fn rate_at(&self, t: Duration) -> Option<f64> {
        match self {
            Schedule::Steps { interval, rates } => {
                let i = (t.as_secs_f64() / interval.as_secs_f64()) as usize % rates.len();
                Some(rates[i])
            }
            Schedule::Stages(stages) => {
                let mut from = 0.0;
                let mut left = t;
                for s in stages {
                    if left < s.duration {
                        let frac = left.as_secs_f64() / s.duration.as_secs_f64();
                        return Some(from + (s.target - from) * frac);
                    }
                    left -= s.duration;
                    from = s.target;
                }
                None
            }
        }
    }
}

/// What to pace.
#[derive(Debug, Clone)]
pub enum RateSpec {
    Unlimited,
    /// Entries per second.
    Entries {
        rate: f64,
        burst: Option<u32>,
    },
    /// Payload bytes per second.
    Bytes {
        rate: f64,
        burst: Option<u32>,
    },
    /// Entries per second following a schedule.
    Schedule(Schedule),
}

/// The answer to "may these units go now?".
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    Go,
    /// Ask again after this long.
    Wait(Duration),
    /// The schedule has ended: stop reading.
    Done,
}

/// Paces units (entries or bytes) through a governor rate limiter.
pub struct Pacer {
    spec: RateSpec,
    limiter: Option<DefaultDirectRateLimiter>,
    /// The rate `limiter` was built for.
    built_for: f64,
    chunk: u32,
    clock: DefaultClock,
    start: Instant,
    /// Units let through by a schedule so far.
    sent: f64,
}

/// The longest single wait while following a schedule, so changes of
/// rate (and the end of a rate-0 step) are noticed promptly.
const SEGMENT: Duration = Duration::from_millis(100);

impl Pacer {
    pub fn new(spec: RateSpec) -> Pacer {
        let mut p = Pacer {
            spec,
            limiter: None,
            built_for: f64::NAN,
            chunk: 1,
            clock: DefaultClock::default(),
            start: Instant::now(),
            sent: 0.0,
        };
        match p.spec.clone() {
            RateSpec::Entries { rate, burst } | RateSpec::Bytes { rate, burst } => {
                p.build(rate, burst)
            }
            _ => {}
        }
        p
    }

    pub fn is_unlimited(&self) -> bool {
        matches!(self.spec, RateSpec::Unlimited)
    }

    pub fn paces_bytes(&self) -> bool {
        matches!(self.spec, RateSpec::Bytes { .. })
    }

    /// How many units to ask for at once: about 5 ms worth, smooth for any
    /// store, without a limiter call (and, when ahead, a sleep and wake-up)
    /// per entry. A millisecond's worth cost a fifth of a paced push's CPU
    /// in wake-ups (push --null --rate 40000 over 20,000 series: 0.23-0.25
    /// CPU-s against 0.17-0.22).
    pub fn chunk(&self) -> u32 {
        self.chunk
    }

    /// The current target rate (units per second), if any.
    pub fn target_rate(&self) -> Option<f64> {
        match &self.spec {
            RateSpec::Unlimited => None,
            RateSpec::Entries { rate, .. } | RateSpec::Bytes { rate, .. } => Some(*rate),
            RateSpec::Schedule(s) => s.rate_at(self.start.elapsed()),
        }
    }

    fn build(&mut self, rate: f64, burst: Option<u32>) {
        self.built_for = rate;
        if rate <= 0.0 {
            self.limiter = None;
            return;
        }
        let chunk = ((rate / 200.0) as u32).clamp(1, 65_536);
        // A burst of only one chunk would lose every late wake-up of the
        // pacing thread for good (measured: 8% under the target rate). 50 ms
        // of headroom lets the limiter make up for them; it starts drained
        // so the headroom is never an initial burst.
        let headroom = (rate * 0.05).min(u32::MAX as f64) as u32;
        let (burst, drain) = match burst {
            Some(b) => (b.max(chunk), false),
            None => (headroom.max(chunk), true),
        };
        self.chunk = chunk;
        // A rate so low that its period overflows is a pause of a day.
        let period = Duration::try_from_secs_f64(1.0 / rate)
            .unwrap_or(Duration::from_secs(86_400))
            .max(Duration::from_nanos(1));
        self.limiter = Quota::with_period(period).map(|q| {
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            let lim = RateLimiter::direct(q.allow_burst(burst));
            if drain {
                let _ = lim.check_n(burst);
            }
            lim
        });
    }

    /// Asks to let `units` through (at most a few chunks); counts them if Go.
    pub fn poll(&mut self, units: u32) -> Pace {
        if let RateSpec::Schedule(s) = &self.spec {
            // A schedule is followed by its integral: the units due by now.
            // Being behind (a late wake-up, a slow reader) is made up, and a
            // ramp delivers exactly its area.
            let elapsed = self.start.elapsed();
            let (Some(due), Some(rate)) = (s.area(elapsed), s.rate_at(elapsed)) else {
                return Pace::Done;
            };
            self.chunk = ((rate / 200.0) as u32).clamp(1, 65_536);
            let want = self.sent + units as f64;
            if want <= due + 1e-9 {
                self.sent = want;
                return Pace::Go;
            }
            let wait = if rate > 0.0 {
                Duration::from_secs_f64(((want - due) / rate).min(SEGMENT.as_secs_f64()))
            } else {
                SEGMENT
            };
            return Pace::Wait(wait.max(Duration::from_micros(100)));
        }
        let Some(lim) = &self.limiter else {
            return Pace::Go;
        };
        let n = NonZeroU32::new(units).unwrap_or(NonZeroU32::MIN);
        match lim.check_n(n) {
            Ok(Ok(())) => Pace::Go,
            Ok(Err(not_until)) => Pace::Wait(not_until.wait_time_from(self.clock.now())),
            // More than the burst: let it through in burst-sized pieces.
            Err(_) => {
                let mut left = units;
                while left > 0 {
                    let step = left.min(self.chunk.max(1));
                    loop {
                        match lim.check_n(NonZeroU32::new(step).unwrap_or(NonZeroU32::MIN)) {
                            Ok(Ok(())) => break,
                            Ok(Err(nu)) => std::thread::sleep(nu.wait_time_from(self.clock.now())),
                            Err(_) => break,
                        }
                    }
                    left -= step;
                }
                Pace::Go
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_formats() {
        let s = Schedule::parse(r#"{"update_interval": 3, "schedule": [10, 20, 5]}"#).unwrap();
        assert_eq!(s.rate_at(Duration::from_secs(0)), Some(10.0));
        assert_eq!(s.rate_at(Duration::from_secs(4)), Some(20.0));
        assert_eq!(s.rate_at(Duration::from_secs(7)), Some(5.0));
        assert_eq!(s.rate_at(Duration::from_secs(9)), Some(10.0), "cycles");

        let r = Schedule::parse(r#"{"stages":[{"duration":"10s","target":100},{"duration":"10s","target":100},{"duration":"5s","target":0}]}"#).unwrap();
        assert_eq!(r.rate_at(Duration::from_secs(5)), Some(50.0));
        assert_eq!(r.rate_at(Duration::from_secs(15)), Some(100.0));
        assert_eq!(r.rate_at(Duration::from_millis(22_500)), Some(50.0));
        assert_eq!(
            r.rate_at(Duration::from_secs(26)),
            None,
            "ends after the last stage"
        );
    }

    #[test]
    fn bad_schedules_say_why() {
        for (text, want) in [
            ("{", "invalid JSON"),
            (r#"{"schedule":[1]}"#, "update_interval"),
            (r#"{"update_interval":0,"schedule":[1]}"#, "positive"),
            (r#"{"update_interval":1,"schedule":[]}"#, "empty"),
            (r#"{"update_interval":1,"schedule":[-1]}"#, ">= 0"),
            (r#"{"stages":[{"duration":"soon","target":1}]}"#, "stage 1"),
            (r#"{"rate":5}"#, "expected"),
        ] {
            let e = Schedule::parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn pacer_delays_beyond_the_rate_and_never_drops() {
        let mut p = Pacer::new(RateSpec::Entries {
            rate: 1000.0,
            burst: Some(10),
        });
        let mut went = 0;
        let mut waited = false;
        for _ in 0..50 {
            match p.poll(1) {
                Pace::Go => went += 1,
                Pace::Wait(d) => {
                    waited = true;
                    assert!(d <= Duration::from_millis(2), "{d:?}");
                    break;
                }
                Pace::Done => panic!(),
            }
        }
        assert!(
            waited,
            "a 1000/s limiter with burst 10 must ask to wait within 50 immediate polls"
        );
        assert!((10..=12).contains(&went), "{went}");
    }

    #[test]
    fn schedule_areas_are_the_integral_of_the_rate() {
        let steps = Schedule::parse(r#"{"update_interval": 2, "schedule": [10, 0, 5]}"#).unwrap();
        assert_eq!(steps.area(Duration::from_secs(1)), Some(10.0));
        assert_eq!(
            steps.area(Duration::from_secs(4)),
            Some(20.0),
            "the rate-0 step adds nothing"
        );
        assert_eq!(steps.area(Duration::from_secs(6)), Some(30.0));
        assert_eq!(steps.area(Duration::from_secs(7)), Some(40.0), "cycles");
        let ramp = Schedule::parse(
            r#"{"stages":[{"duration":"10s","target":100},{"duration":"5s","target":100}]}"#,
        )
        .unwrap();
        assert_eq!(ramp.area(Duration::from_secs(10)), Some(500.0));
        assert_eq!(ramp.area(Duration::from_secs(5)), Some(125.0));
        assert_eq!(ramp.area(Duration::from_secs(15)), Some(1000.0));
        assert_eq!(ramp.area(Duration::from_secs(16)), None);
    }

    #[test]
    fn finished_stages_say_done() {
        let s = Schedule::parse(r#"{"stages":[{"duration":"1ms","target":10}]}"#).unwrap();
        let mut p = Pacer::new(RateSpec::Schedule(s));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(p.poll(1), Pace::Done);
    }
}
