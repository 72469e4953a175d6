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
}
