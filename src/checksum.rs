//! Order-independent digests of fragment contents.
//!
//! A fragment's digest is the entry count plus the wrapping sum of a 64-bit
//! hash of each entry. Summing (rather than XOR-ing) keeps duplicates
//! visible, and order independence lets the verifier fold entries in
//! whatever order the store returns them, without keeping any payload.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Count and order-independent checksum of a multiset of entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digest {
    pub count: u64,
    pub sum: u64,
}

impl Digest {
    pub fn add(&mut self, hash: u64) {
        self.count += 1;
        self.sum = self.sum.wrapping_add(hash);
    }

    pub fn merge(&mut self, other: Digest) {
        self.count += other.count;
        self.sum = self.sum.wrapping_add(other.sum);
    }

    pub fn hex(&self) -> String {
        format!("{:016x}", self.sum)
    }

    pub fn parse_hex(s: &str) -> Option<u64> {
        u64::from_str_radix(s, 16).ok()
    }
}

/// Hash of one log entry: its nanosecond timestamp and exact line bytes.
pub fn log_entry(ts_ns: i64, line: &[u8]) -> u64 {
    xxh3_64_with_seed(line, ts_ns as u64)
}

/// Hash of one metric sample: its millisecond timestamp and the exact bits
/// of its value (all NaNs are one value, as stores do not keep payloads).
pub fn metric_sample(ts_ms: i64, value: f64) -> u64 {
    let bits = if value.is_nan() {
        f64::NAN.to_bits()
    } else {
        value.to_bits()
    };
    xxh3_64_with_seed(&bits.to_le_bytes(), ts_ms as u64)
}

/// The same sample with its value rounded as VictoriaMetrics keeps values
/// ([`round_12`]); lets the verifier tell "rounded by the store" apart from
/// "altered".
pub fn metric_sample_12(ts_ms: i64, value: f64) -> u64 {
    metric_sample(ts_ms, round_12(value))
}

/// `value` rounded to 12 significant digits, integers up to 2^53 unchanged
/// (VictoriaMetrics keeps those exactly). VictoriaMetrics keeps up to 15
/// digits above 1e6, but truncates and adds float error there, so rounding
/// to more than 12 digits would rarely match what it returns. Scaling by a
/// power of ten instead of
/// formatting: exact decimal formatting cost a quarter of the pusher's CPU
/// on metric input. Both sides of a comparison use this same function, so
/// its last-bit behaviour only has to be deterministic.
pub fn round_12(value: f64) -> f64 {
    if !value.is_finite() || value == 0.0 || relative_precision(value) == 0.0 {
        return value;
    }
    let exp = floor_log10(value.abs());
    let shift = 11 - exp;
    // 10^shift must stay finite and normal on both sides.
    if !(-290..=290).contains(&shift) {
        return value;
    }
    let r = if shift >= 0 {
        let scale = 10f64.powi(shift);
        round(value * scale) / scale
    } else {
        let scale = 10f64.powi(-shift);
        round(value / scale) * scale
    };
    if r.is_finite() {
        r
    } else {
        value
    }
}

/// What a store that keeps values only approximately can still be checked
/// against. VictoriaMetrics stores a block of a series' values as integers
/// sharing one decimal exponent, so a small value next to a much larger one
/// keeps fewer than 12 digits (3.14159265358979 beside 98765432101.28 comes
/// back as 3.1415926); a per-value hash cannot tell that from an altered
/// value. These sums can:
///
/// - `ts`: the exact set of timestamps (wrapping sum of their hashes; an
///   infinity's sign is mixed in, as stores keep infinities exactly);
/// - `sum`: each finite value mapped by a log-like curve, `g(v) = sign(v) *
///   log2(1 + |v| / scale)`, times a weight in [1, 2) drawn from its
///   timestamp (so values moved between timestamps change it), summed in
///   fixed point (exact, so the order of summing does not matter and no
///   rounding error grows with the count). Through the curve, an error `e`
///   in a value moves its term by at most `4e / (scale + |v|)`: relative
///   for large values, absolute below `scale`, so one large value's
///   rounding does not drown the small ones.
///
/// NaN samples are left out: VictoriaMetrics drops them, and the verifier
/// checks NaN-holding fragments there without them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ValueSums {
    pub ts: u64,
    /// A power of two 2^17 times below the fragment's largest |value|.
    pub scale: f64,
    /// In units of 2^-64.
    pub sum: i128,
    /// Sum of each value's relative rounding allowance (see
    /// `relative_precision`).
    pub rel: f64,
    /// Sum of 1 / (scale + |v|) over non-zero values: how far an absolute
    /// error in each of them can move `sum` (stores keep zeros exactly).
    pub inv: f64,
    /// Sum of |terms|, to bound floating-point error (not recorded).
    pub abs: f64,
    /// Largest finite |value|.
    pub max_abs: f64,
}

/// Error a store may add to every value of a series, relative to the
/// series' largest |value|: a block's shared exponent is chosen so that
/// value's mantissa stays above 2^63 / 10, so one unit of the exponent is at
/// most 1.08e-18 of it; with a margin of 1.85.
const SHARED_EXPONENT_PRECISION: f64 = 2e-18;

/// One, in the fixed point of `ValueSums::sum`.
const FIXED_ONE: f64 = 18_446_744_073_709_551_616.0;

/// Marks an infinity's timestamp in `ValueSums::ts`, by sign.
const POS_INF_MARK: u64 = 0x5bd1_e995_0000_0001;
const NEG_INF_MARK: u64 = 0x5bd1_e995_0000_0002;

/// `a.log10().floor() as i32` for finite a > 0, without libm's log10 (a
/// fifth of the pusher's CPU on non-integer values) where the answer is
/// certain: from the binary exponent and exact-enough powers of ten, when
/// `a` is more than 1e-12 (relative) away from a power of ten. Closer than
/// that, libm's log10 could round to the next integer, so it decides, as
/// before; farther, its error (under 1e-13 of the logarithm) cannot move
/// the floor, so both give the same integer.
fn floor_log10(a: f64) -> i32 {
    const P: [f64; 45] = [
        1e-22, 1e-21, 1e-20, 1e-19, 1e-18, 1e-17, 1e-16, 1e-15, 1e-14, 1e-13, 1e-12, 1e-11, 1e-10,
        1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6,
        1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21,
        1e22,
    ];
    let slow = |a: f64| a.log10().floor() as i32;
    let e2 = ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023;
    if !(-70..=70).contains(&e2) {
        return slow(a);
    }
    // floor(log10(a)) is this or one more, as 2^e2 <= a < 2^(e2 + 1):
    // floor(e2 * log10(2)), in integers (78913 / 2^18 is log10(2) to
    // within 2e-7, exact enough for |e2| <= 70; a unit test checks).
    let mut e = (e2 * 78913) >> 18;
    let at = |e: i32| P[(e + 22) as usize];
    if !(-22..=21).contains(&e) {
        return slow(a);
    }
    if a >= at(e + 1) {
        e += 1;
        if e > 21 {
            return slow(a);
        }
    }
    if a < at(e) * (1.0 + 1e-12) || a > at(e + 1) * (1.0 - 1e-12) {
        return slow(a);
    }
    e
}

/// `x.round()` (half away from zero) without a call to libm: below 2^52
/// the integer part converts exactly and so does the rest, which decides;
/// from 2^52 up every double is an integer.
#[inline]
fn round(x: f64) -> f64 {
    if x.is_nan() || x.abs() >= 4_503_599_627_370_496.0 {
        return x;
    }
    let i = x as i64;
    let rest = x - i as f64;
    let r = if rest >= 0.5 {
        i + 1
    } else if rest <= -0.5 {
        i - 1
    } else {
        i
    };
    // -0.4 rounds to -0.0, as f64::round gives.
    (r as f64).copysign(x)
}

/// `value == value.trunc()` for finite values, without a call to libm's
/// `trunc` (the baseline x86-64 target has no instruction for it): every
/// double from 2^52 up is an integer, and below that the conversion to i64
/// is exact for integers.
#[inline]
fn is_integer(value: f64) -> bool {
    value.abs() >= 4_503_599_627_370_496.0 || (value as i64) as f64 == value
}

/// The relative error VictoriaMetrics' conversion of one value to a
/// decimal may add, with a margin of 4: integers up to 2^53 are kept
/// exactly, values above 1e6 to 15 significant digits (within 1e-15), the
/// others to 12 (within 1e-12).
pub fn relative_precision(value: f64) -> f64 {
    let a = value.abs();
    if a <= 9_007_199_254_740_992.0 && is_integer(value) {
        0.0
    } else if a > 1e6 {
        4e-15
    } else {
        4e-12
    }
}

impl ValueSums {
    /// Empty sums whose curve bends at `scale`.
    pub fn with_scale(scale: f64) -> ValueSums {
        ValueSums {
            scale,
            ..ValueSums::default()
        }
    }

    /// The sums of a fragment's samples.
    pub fn of(samples: impl Iterator<Item = (i64, f64)> + Clone) -> ValueSums {
        let max_abs = samples
            .clone()
            .map(|(_, v)| v.abs())
            .filter(|a| a.is_finite())
            .fold(0f64, f64::max);
        let mut s = ValueSums::with_scale(scale_for(max_abs));
        samples.for_each(|(t, v)| s.add(t, v));
        s
    }

    /// Adds one sample; a NaN is left out.
    pub fn add(&mut self, ts_ms: i64, value: f64) {
        let h = ts_hash(ts_ms);
        if value.is_nan() {
            return;
        }
        if value.is_infinite() {
            let mark = if value > 0.0 {
                POS_INF_MARK
            } else {
                NEG_INF_MARK
            };
            self.ts = self.ts.wrapping_add(h ^ mark);
            return;
        }
        self.ts = self.ts.wrapping_add(h);
        let term = weight(h) * curve(value, self.scale);
        // |term| < 2 * 1100 (log2 of the largest double): no overflow.
        self.sum = self.sum.wrapping_add(to_fixed(term));
        self.rel += relative_precision(value);
        if value != 0.0 {
            self.inv += 1.0 / (self.scale + value.abs());
        }
        self.abs += term.abs();
        self.max_abs = self.max_abs.max(value.abs());
    }

    /// Sums of two sets of samples; None unless they share a scale.
    pub fn merged(&self, o: &ValueSums) -> Option<ValueSums> {
        (self.scale == o.scale).then(|| ValueSums {
            ts: self.ts.wrapping_add(o.ts),
            scale: self.scale,
            sum: self.sum.wrapping_add(o.sum),
            rel: self.rel + o.rel,
            inv: self.inv + o.inv,
            abs: self.abs + o.abs,
            max_abs: self.max_abs.max(o.max_abs),
        })
    }

    /// True when `found` (read back) has exactly these timestamps, no value
    /// larger than any sent (a store's rounding never grows a value by more
    /// than its relative precision), and values that differ from these by
    /// no more than a store's decimal rounding: each value's relative
    /// precision plus SHARED_EXPONENT_PRECISION of `series_max`, the
    /// largest |value| the series was sent (a storage block can span
    /// fragments).
    pub fn within_precision(&self, found: &ValueSums, count: u64, series_max: f64) -> bool {
        if self.ts != found.ts || self.scale != found.scale || self.scale <= 0.0 {
            return false;
        }
        if found.max_abs > self.max_abs * (1.0 + 4e-12) {
            return false;
        }
        let n = count as f64;
        let quantum = SHARED_EXPONENT_PRECISION * series_max.max(self.max_abs);
        // Through the curve (its slope is at most 2 / (scale + |v|)) and
        // weights below 2: a relative error r moves a term by at most 4r,
        // an absolute one q by 4q / (scale + |v|).
        let rounding = 4.0 * (self.rel + quantum * self.inv);
        // Computing each term rounds; the fixed-point sum itself is exact.
        let float_error = 8.0 * f64::EPSILON * (n + self.abs.max(found.abs));
        let diff = self.sum.wrapping_sub(found.sum) as f64 / FIXED_ONE;
        diff.abs() <= rounding + float_error
    }
}

/// `(term * FIXED_ONE) as i128` for |term| < 2^31, in two hardware
/// conversions instead of the software f64 -> i128 one, which was a tenth
/// of the pusher's CPU on metrics. Both truncate toward zero: the high
/// part is `x` truncated to a multiple of 2^32, so the rest keeps the sign
/// of `x`, is below 2^32 and is computed exactly.
#[inline]
fn to_fixed(term: f64) -> i128 {
    const TWO_32: f64 = 4_294_967_296.0;
    let x = term * FIXED_ONE;
    let hi = (x / TWO_32) as i64;
    let rest = x - hi as f64 * TWO_32;
    ((hi as i128) << 32) + rest as i64 as i128
}

/// The curve's bend for a fragment whose largest |value| is `max_abs`.
pub fn scale_for(max_abs: f64) -> f64 {
    if max_abs > 0.0 && max_abs.is_finite() {
        // 2^(exponent of max_abs - 17), kept normal.
        let exp = ((max_abs.to_bits() >> 52) & 0x7ff) as i64 - 1023;
        f64::from_bits((((exp - 17).max(-1022) + 1023) as u64) << 52)
    } else {
        1.0
    }
}

/// sign(v) * log2(1 + |v| / scale), with log2 linear between powers of two:
/// cheap, continuous, monotonic, and its slope is within a factor of two
/// of the true logarithm's.
fn curve(value: f64, scale: f64) -> f64 {
    let x = 1.0 + value.abs() / scale;
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mantissa = f64::from_bits((bits & ((1 << 52) - 1)) | (1023 << 52));
    let l = exp as f64 + (mantissa - 1.0);
    if value < 0.0 {
        -l
    } else {
        l
    }
}

/// splitmix64's finaliser: a cheap, well-mixed hash of a timestamp.
fn ts_hash(ts: i64) -> u64 {
    let mut z = (ts as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A weight in [1, 2) from a timestamp hash.
fn weight(h: u64) -> f64 {
    1.0 + (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_log10_of_two_powers_is_exact() {
        for e2 in -70i32..=70 {
            let want = (f64::from(e2) * std::f64::consts::LOG10_2).floor() as i32;
            assert_eq!((e2 * 78913) >> 18, want, "{e2}");
        }
    }

    /// The shortcuts give exactly what the plain expressions give, on
    /// random bit patterns and on the edges.
    #[test]
    fn shortcuts_match_the_plain_expressions() {
        let mut rng = crate::gen::rng::Rng::new(4, 0, 0);
        let mut values: Vec<f64> = (0..200_000)
            .map(|_| f64::from_bits(rng.u64()))
            .filter(|v| v.is_finite())
            .collect();
        for e in -60..70 {
            let p = 2f64.powi(e);
            values.extend([p, -p, p * 1.5, p - 0.5, p + 0.5, -p + 0.25]);
        }
        for i in 0..2000 {
            values.push(i as f64 / 8.0);
            values.push(-(i as f64) * 1e-3);
        }
        // Terms as they come: any size up to 2200, either sign.
        for _ in 0..200_000 {
            let t = (rng.u64() >> 11) as f64 / (1u64 << 53) as f64 * 4400.0 - 2200.0;
            values.push(t * 2f64.powi(-(rng.below(60) as i32)));
        }
        values.extend([0.0, -0.0, 4_503_599_627_370_496.0, 9_007_199_254_740_993.0]);
        // Next to powers of ten, where log10 rounds to the integer.
        for k in -30..30 {
            let p = 10f64.powi(k);
            for d in -40i64..40 {
                values.push(f64::from_bits((p.to_bits() as i64 + d) as u64));
            }
            values.extend([
                p * (1.0 + 1e-12),
                p * (1.0 - 1e-12),
                p * 1.000001,
                p * 0.999999,
            ]);
        }
        for v in values {
            assert_eq!(is_integer(v), v == v.trunc(), "{v:e}");
            assert_eq!(round(v).to_bits(), v.round().to_bits(), "{v:e}");
            for x in [v * 1e12, v + 0.5, v - 0.5, (v * 2.0).trunc() / 2.0] {
                assert_eq!(round(x).to_bits(), x.round().to_bits(), "{x:e}");
            }
            let a = v.abs();
            if a.is_finite() && a > 0.0 {
                assert_eq!(floor_log10(a), a.log10().floor() as i32, "{a:e}");
            }
            // Terms are below 2 * 1100.
            let term = v.clamp(-2200.0, 2200.0);
            assert_eq!(to_fixed(term), (term * FIXED_ONE) as i128, "{term:e}");
        }
    }

    #[test]
    fn digest_is_order_independent_but_sees_duplicates() {
        let hs = [log_entry(1, b"a"), log_entry(2, b"b"), log_entry(3, b"c")];
        let mut fwd = Digest::default();
        hs.iter().for_each(|h| fwd.add(*h));
        let mut rev = Digest::default();
        hs.iter().rev().for_each(|h| rev.add(*h));
        assert_eq!(fwd, rev);

        // a a b vs a b b: same count, XOR would also differ, but
        // a a vs b b under XOR both cancel to 0; the sum does not.
        let mut aa = Digest::default();
        aa.add(hs[0]);
        aa.add(hs[0]);
        let mut bb = Digest::default();
        bb.add(hs[1]);
        bb.add(hs[1]);
        assert_ne!(aa, bb);
    }

    #[test]
    fn timestamp_and_payload_both_matter() {
        assert_ne!(log_entry(1, b"x"), log_entry(2, b"x"));
        assert_ne!(log_entry(1, b"x"), log_entry(1, b"y"));
        assert_ne!(metric_sample(1, 1.0), metric_sample(1, 1.0000000000001));
        assert_eq!(
            metric_sample_12(1, 1.0),
            metric_sample_12(1, 1.0000000000001)
        );
        assert_eq!(metric_sample(5, f64::NAN), metric_sample(5, -f64::NAN));
    }

    #[test]
    fn rounding_as_victoriametrics_keeps_short_decimals_and_is_idempotent() {
        for v in [
            0.1,
            12.345,
            -7.0,
            1e-9,
            123456789012.0,
            3.0e20,
            0.30000000000000004,
        ] {
            let r = round_12(v);
            assert_eq!(round_12(r), r, "{v}");
            assert!((r - v).abs() <= v.abs() * 1e-11, "{v} -> {r}");
        }
        assert_eq!(round_12(0.1), 0.1);
        assert_eq!(round_12(12.345), 12.345);
        assert_eq!(round_12(1.0000000000001), 1.0);
        // Integers VictoriaMetrics keeps exactly are not rounded.
        assert_eq!(round_12(123456789012345.0), 123456789012345.0);
        assert_eq!(round_12(1234567.8901234567), 1234567.89012);
        assert_eq!(round_12(1.5e17 + 0.0), 1.5e17);
    }

    #[test]
    fn hex_round_trips() {
        let mut d = Digest::default();
        d.add(log_entry(9, b"z"));
        assert_eq!(Digest::parse_hex(&d.hex()), Some(d.sum));
    }

    #[test]
    fn value_sums_accept_block_rounding_but_not_changed_or_moved_values() {
        let sums = |vals: &[(i64, f64)], scale: f64| {
            let mut s = ValueSums::with_scale(scale);
            vals.iter().for_each(|&(t, v)| s.add(t, v));
            s
        };
        let sent = [
            (1000, 98765432101.2789),
            (2000, 4.12345678901234),
            (3000, 7.5),
        ];
        let exp = ValueSums::of(sent.iter().copied());
        let (sc, max) = (exp.scale, 98765432101.2789);
        assert_eq!(sc, 2f64.powi(36 - 17));
        // As VictoriaMetrics stores them: one exponent for the block.
        let stored = sums(
            &[(1000, 98765432101.2789), (2000, 4.1234567), (3000, 7.5)],
            sc,
        );
        assert!(exp.within_precision(&stored, 3, max));
        // One value changed in its third digit; one value changed in its
        // tenth.
        let changed = sums(
            &[
                (1000, 98765432101.2789),
                (2000, 4.13345678901234),
                (3000, 7.5),
            ],
            sc,
        );
        assert!(!exp.within_precision(&changed, 3, max));
        let big = sums(
            &[
                (1000, 98765432201.2789),
                (2000, 4.12345678901234),
                (3000, 7.5),
            ],
            sc,
        );
        assert!(!exp.within_precision(&big, 3, max));
        // Two values swapped between timestamps: same multiset of values.
        let swapped = sums(
            &[
                (1000, 98765432101.2789),
                (2000, 7.5),
                (3000, 4.12345678901234),
            ],
            sc,
        );
        assert!(!exp.within_precision(&swapped, 3, max));
        // A timestamp moved.
        let moved = sums(
            &[
                (1000, 98765432101.2789),
                (2001, 4.12345678901234),
                (3000, 7.5),
            ],
            sc,
        );
        assert!(!exp.within_precision(&moved, 3, max));
        // Order of accumulation does not matter; non-finite values have no
        // sums.
        let rev: Vec<_> = sent.iter().rev().copied().collect();
        assert!(exp.within_precision(&sums(&rev, sc), 3, max));
        // Infinities are kept exactly: a changed sign is caught. NaN is
        // left out (the store drops it), and so is its timestamp.
        let inf = ValueSums::of([(1, 1.5), (2, f64::INFINITY)].into_iter());
        let neg = sums(&[(1, 1.5), (2, f64::NEG_INFINITY)], inf.scale);
        assert!(!inf.within_precision(&neg, 2, 1.5));
        assert!(inf.within_precision(&sums(&[(1, 1.5), (2, f64::INFINITY)], inf.scale), 2, 1.5));
        let nan = ValueSums::of([(1, 1.5), (2, f64::NAN), (3, 2.5)].into_iter());
        assert!(nan.within_precision(&sums(&[(1, 1.5), (3, 2.5)], nan.scale), 2, 2.5));
        // Nothing read back may be larger than anything sent.
        let grown = sums(
            &[
                (1000, 98765432101.2789 * 1.001),
                (2000, 4.12345678901234),
                (3000, 7.5),
            ],
            sc,
        );
        assert!(!exp.within_precision(&grown, 3, max));
        // Without a large neighbour, small values keep their precision.
        let small = ValueSums::of([(1, 4.12345678901234), (2, 2.5)].into_iter());
        let off = sums(&[(1, 4.1234567), (2, 2.5)], small.scale);
        assert!(!small.within_precision(&off, 2, 4.2));
    }
}
