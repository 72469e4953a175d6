//! Label sets: the identity of a series, their validation, and the two
//! textual forms stores want (a Loki stream selector and a PromQL matcher).

use std::fmt::Write as _;

/// Why a label set is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("invalid label name {0:?}: must match [a-zA-Z_][a-zA-Z0-9_]*")]
    InvalidName(String),
    #[error("invalid metric name {0:?}: must match [a-zA-Z_:][a-zA-Z0-9_:]*")]
    InvalidMetricName(String),
    #[error("label {0:?} has an empty value (stores drop empty labels, so the series would change identity)")]
    EmptyValue(String),
    #[error("duplicate label name {0:?}")]
    Duplicate(String),
    #[error("empty label set: at least one label is required")]
    Empty,
    #[error("metric sample has no __name__ label")]
    NoMetricName,
    #[error("malformed labels: {0}")]
    Malformed(String),
}

/// A series identity: label pairs sorted by name in byte order, which is
/// the order Prometheus remote write requires and Loki normalises to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct LabelSet(Vec<(String, String)>);

pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

pub fn is_valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

impl LabelSet {
    /// Builds a validated set from pairs in any order.
    pub fn new(mut pairs: Vec<(String, String)>) -> Result<LabelSet, LabelError> {
        if pairs.is_empty() {
            return Err(LabelError::Empty);
        }
        pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        for w in pairs.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(LabelError::Duplicate(w[0].0.clone()));
            }
        }
        for (name, value) in &pairs {
            if name == "__name__" {
                if !is_valid_metric_name(value) {
                    return Err(LabelError::InvalidMetricName(value.clone()));
                }
            } else if !is_valid_label_name(name) {
                return Err(LabelError::InvalidName(name.clone()));
            }
            if value.is_empty() {
                return Err(LabelError::EmptyValue(name.clone()));
            }
        }
        Ok(LabelSet(pairs))
    }

    /// Parses `k=v` (as given to `--label`).
    pub fn parse_pair(s: &str) -> Result<(String, String), LabelError> {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| LabelError::Malformed(format!("{s:?} is not of the form name=value")))?;
        let (k, v) = (k.trim(), v.trim());
        if !is_valid_label_name(k) {
            return Err(LabelError::InvalidName(k.to_string()));
        }
        if v.is_empty() {
            return Err(LabelError::EmptyValue(k.to_string()));
        }
        Ok((k.to_string(), v.to_string()))
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Returns a copy without the named label.
    pub fn without(&self, name: &str) -> LabelSet {
        LabelSet(self.0.iter().filter(|(n, _)| n != name).cloned().collect())
    }

    /// `{a="1", b="2"}` with Go string escaping, which is what Loki's push
    /// protobuf `labels` field and LogQL stream selectors expect. The
    /// `__name__` label, if any, is written like any other.
    pub fn to_selector(&self) -> String {
        let mut s = String::with_capacity(16 * self.0.len() + 2);
        s.push('{');
        for (i, (name, value)) in self.0.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            s.push_str(name);
            s.push('=');
            push_go_quoted(&mut s, value);
        }
        s.push('}');
        s
    }

    /// The selector of this label set with `label` matched by a regular
    /// expression for any of `values` instead: `{a="1", s=~"x|y"}`, the
    /// values escaped so each matches only itself (PromQL regexes are RE2
    /// and anchored).
    pub fn to_selector_matching(&self, label: &str, values: &[&str]) -> String {
        // An empty value would also match series without the label.
        debug_assert!(values.iter().all(|v| !v.is_empty()));
        debug_assert!(self.get(label).is_some());
        let mut s = String::with_capacity(16 * self.0.len() + 16 * values.len());
        s.push('{');
        for (i, (name, value)) in self.0.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            s.push_str(name);
            if name == label {
                let mut re = String::new();
                for (k, v) in values.iter().enumerate() {
                    if k > 0 {
                        re.push('|');
                    }
                    for c in v.chars() {
                        if "\\.+*?()|[]{}^$".contains(c) {
                            re.push('\\');
                        }
                        re.push(c);
                    }
                }
                s.push_str("=~");
                push_go_quoted(&mut s, &re);
            } else {
                s.push('=');
                push_go_quoted(&mut s, value);
            }
        }
        s.push('}');
        s
    }

    /// The JSON object form used in records and manifests: `{"a":"1","b":"2"}`.
    pub fn to_json(&self) -> String {
        let mut buf = Vec::with_capacity(16 * self.0.len() + 2);
        self.write_json(&mut buf);
        // write_json only emits valid UTF-8 (it copies UTF-8 input and ASCII escapes).
        String::from_utf8(buf).unwrap_or_default()
    }

    pub fn write_json(&self, buf: &mut Vec<u8>) {
        buf.push(b'{');
        for (i, (name, value)) in self.0.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            crate::record::write_json_str(buf, name);
            buf.push(b':');
            crate::record::write_json_str(buf, value);
        }
        buf.push(b'}');
    }

    /// A short human form for reports: the selector.
    pub fn display(&self) -> String {
        self.to_selector()
    }
}

impl std::fmt::Display for LabelSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_selector())
    }
}

/// Appends `value` as a double-quoted string that Go's `strconv.Unquote`
/// (used by both the Prometheus and the LogQL lexers) reads back unchanged.
/// Rust's `{:?}` is not suitable: it writes `\u{..}`, which Go rejects.
pub fn push_go_quoted(s: &mut String, value: &str) {
    s.push('"');
    for c in value.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(s, "\\x{:02x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

impl serde::Serialize for LabelSet {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = ser.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> serde::Deserialize<'de> for LabelSet {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let map: std::collections::BTreeMap<String, String> = serde::Deserialize::deserialize(de)?;
        LabelSet::new(map.into_iter().collect()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(p: &[(&str, &str)]) -> Result<LabelSet, LabelError> {
        LabelSet::new(
            p.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    }

    #[test]
    fn sorts_by_byte_order_so_uppercase_precedes_name() {
        let s = set(&[("b", "1"), ("__name__", "m"), ("A", "2")]).unwrap();
        let names: Vec<_> = s.pairs().iter().map(|p| p.0.as_str()).collect();
        assert_eq!(names, ["A", "__name__", "b"]);
    }

    #[test]
    fn rejects_what_stores_reject() {
        assert_eq!(set(&[]), Err(LabelError::Empty));
        assert!(matches!(
            set(&[("1a", "x")]),
            Err(LabelError::InvalidName(_))
        ));
        assert!(matches!(
            set(&[("a-b", "x")]),
            Err(LabelError::InvalidName(_))
        ));
        assert!(matches!(set(&[("a", "")]), Err(LabelError::EmptyValue(_))));
        assert!(matches!(
            set(&[("a", "1"), ("a", "2")]),
            Err(LabelError::Duplicate(_))
        ));
        assert!(matches!(
            set(&[("__name__", "http-requests")]),
            Err(LabelError::InvalidMetricName(_))
        ));
        assert!(set(&[("__name__", "ns:http_requests_total")]).is_ok());
    }

    #[test]
    fn selector_uses_go_escapes() {
        let s = set(&[("app", "a\"b\\c\nd\u{1}é")]).unwrap();
        assert_eq!(s.to_selector(), r#"{app="a\"b\\c\nd\x01é"}"#);
    }

    #[test]
    fn json_round_trip() {
        let s = set(&[("z", "1"), ("a", "q\"uote")]).unwrap();
        let back: LabelSet = serde_json::from_str(&s.to_json()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn selector_matching_escapes_values_for_the_regex_and_the_string() {
        let l = LabelSet::new(vec![
            ("__name__".into(), "m".into()),
            ("s".into(), "a".into()),
        ])
        .unwrap();
        assert_eq!(
            l.to_selector_matching("s", &["x(y|z", "p.q \"r\\", "plain"]),
            r#"{__name__="m", s=~"x\\(y\\|z|p\\.q \"r\\\\|plain"}"#
        );
    }
}
