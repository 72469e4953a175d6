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

/// The same sample with its value rounded to 12 significant digits, the
/// precision VictoriaMetrics keeps; lets the verifier tell "rounded by the
/// store" apart from "altered".
pub fn metric_sample_12(ts_ms: i64, value: f64) -> u64 {
    metric_sample(ts_ms, round_12(value))
}

/// `value` rounded to 12 significant digits. Scaling by a power of ten
/// instead of formatting: exact decimal formatting cost a quarter of the
/// pusher's CPU on metric input. Both sides of a comparison use this same
/// function, so its last-bit behaviour only has to be deterministic.
pub fn round_12(value: f64) -> f64 {
    if !value.is_finite() || value == 0.0 {
        return value;
    }
    let exp = value.abs().log10().floor() as i32;
    let shift = 11 - exp;
    // 10^shift must stay finite and normal on both sides.
    if !(-290..=290).contains(&shift) {
        return value;
    }
    let r = if shift >= 0 {
        let scale = 10f64.powi(shift);
        (value * scale).round() / scale
    } else {
        let scale = 10f64.powi(-shift);
        (value / scale).round() * scale
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
/// - `ts`: the exact set of timestamps (wrapping sum of their hashes);
/// - `sum`: each value mapped by a log-like curve, `g(v) = sign(v) *
///   log2(1 + |v| / scale)`, times a weight in [1, 2) drawn from its
///   timestamp (so values moved between timestamps change it), summed in
///   fixed point (exact, so the order of summing does not matter and no
///   rounding error grows with the count). Through the curve, an error `e`
///   in a value moves its term by at most `4e / (scale + |v|)`: relative
///   for large values, absolute below `scale`, so one large value's
///   rounding does not drown the small ones.
///
/// Only finite values are summed: a fragment holding NaN or an infinity has
/// no sums.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ValueSums {
    pub ts: u64,
    /// A power of two 2^17 times below the fragment's largest |value|.
    pub scale: f64,
    /// In units of 2^-64.
    pub sum: i128,
    /// Sum of 1 / (scale + |v|): how far an absolute error in every value
    /// can move `sum`.
    pub inv: f64,
    /// Sum of |terms|, to bound floating-point error (not recorded).
    pub abs: f64,
    /// Largest |value|.
    pub max_abs: f64,
}

/// Relative error a store may add to each value: VictoriaMetrics converts
/// values to decimals of at least 12 significant digits (15 above 1e6),
/// to within 1e-12 of the value; with a margin of 4.
const RELATIVE_PRECISION: f64 = 4e-12;
/// Error a store may add to every value of a series, relative to the
/// series' largest |value|: a block's shared exponent keeps that value's
/// mantissa above 2^63 / 10, so one unit of the exponent is at most about
/// 1.1e-18 of it; with a margin of 9.
const SHARED_EXPONENT_PRECISION: f64 = 1e-17;

/// One, in the fixed point of `ValueSums::sum`.
const FIXED_ONE: f64 = 18_446_744_073_709_551_616.0;

impl ValueSums {
    /// Empty sums whose curve bends at `scale`.
    pub fn with_scale(scale: f64) -> ValueSums {
        ValueSums {
            scale,
            ..ValueSums::default()
        }
    }

    /// The sums of a fragment's samples; None when a value is not finite.
    pub fn of(samples: impl Iterator<Item = (i64, f64)> + Clone) -> Option<ValueSums> {
        let mut max_abs = 0f64;
        for (_, v) in samples.clone() {
            if !v.is_finite() {
                return None;
            }
            max_abs = max_abs.max(v.abs());
        }
        let mut s = ValueSums::with_scale(scale_for(max_abs));
        samples.for_each(|(t, v)| s.add(t, v));
        Some(s)
    }

    /// Adds one finite value.
    pub fn add(&mut self, ts_ms: i64, value: f64) {
        let h = ts_hash(ts_ms);
        self.ts = self.ts.wrapping_add(h);
        let term = weight(h) * curve(value, self.scale);
        // |term| < 2 * 1100 (log2 of the largest double): no overflow.
        self.sum = self.sum.wrapping_add((term * FIXED_ONE) as i128);
        self.inv += 1.0 / (self.scale + value.abs());
        self.abs += term.abs();
        self.max_abs = self.max_abs.max(value.abs());
    }

    /// Sums of two sets of samples; None unless they share a scale.
    pub fn merged(&self, o: &ValueSums) -> Option<ValueSums> {
        (self.scale == o.scale).then(|| ValueSums {
            ts: self.ts.wrapping_add(o.ts),
            scale: self.scale,
            sum: self.sum.wrapping_add(o.sum),
            inv: self.inv + o.inv,
            abs: self.abs + o.abs,
            max_abs: self.max_abs.max(o.max_abs),
        })
    }

    /// True when `found` (read back, `count` samples) has exactly these
    /// timestamps, and values that differ from these by no more than a
    /// store's decimal rounding: RELATIVE_PRECISION of each value plus
    /// SHARED_EXPONENT_PRECISION of `series_max`, the largest |value| of
    /// the series (a storage block can span fragments).
    pub fn within_precision(&self, found: &ValueSums, count: u64, series_max: f64) -> bool {
        if self.ts != found.ts || self.scale != found.scale || self.scale <= 0.0 {
            return false;
        }
        let n = count as f64;
        let quantum = SHARED_EXPONENT_PRECISION * series_max.max(self.max_abs);
        // Through the curve (its slope is at most 2 / (scale + |v|)) and
        // weights below 2: a relative error moves each term by at most
        // 4 * RELATIVE_PRECISION, an absolute one by
        // 4 * quantum / (scale + |v|).
        let rounding = 4.0 * (n * RELATIVE_PRECISION + quantum * self.inv);
        // Computing each term rounds; the fixed-point sum itself is exact.
        let float_error = 8.0 * f64::EPSILON * (n + self.abs.max(found.abs));
        let diff = self.sum.wrapping_sub(found.sum) as f64 / FIXED_ONE;
        diff.abs() <= rounding + float_error
    }
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
    fn rounding_to_12_digits_keeps_short_decimals_and_is_idempotent() {
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
        assert_eq!(round_12(123456789012345.0), 123456789012000.0);
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
        let exp = ValueSums::of(sent.iter().copied()).unwrap();
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
        assert_eq!(
            ValueSums::of([(1, 1.0), (2, f64::INFINITY)].into_iter()),
            None
        );
        // Without a large neighbour, small values keep their precision.
        let small = ValueSums::of([(1, 4.12345678901234), (2, 2.5)].into_iter()).unwrap();
        let off = sums(&[(1, 4.1234567), (2, 2.5)], small.scale);
        assert!(!small.within_precision(&off, 2, 4.2));
    }
}
