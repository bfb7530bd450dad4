//! Strictly parsed quantities used in manifests: durations (`5s`, `10m`, `1h30m`), sizes (`46GiB`,
//! `512MB`), temperatures in °C and fractions in `[0, 1]`.
//!
//! Pure: no I/O. Each type deserialises from exactly one textual form and serialises back to its
//! canonical form, so a manifest round-trips (`parse(render(x)) == x`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Pattern shared by the parser and the JSON Schema, so editors and `validate` agree.
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h|d))+$";
/// Pattern for sizes; units are SI (`KB` = 1000) or IEC (`KiB` = 1024), `B` for bytes.
pub const SIZE_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$";

/// A duration written as `5s`, `250ms`, `10m`, `1h30m` or `2d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn from_secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    pub const fn from_millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }
    pub const fn get(self) -> Duration {
        self.0
    }
}

impl From<Dur> for Duration {
    fn from(d: Dur) -> Duration {
        d.0
    }
}

/// Why a duration, size or other quantity did not parse. The message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {input:?}: expected {expected}")]
pub struct UnitError {
    pub what: &'static str,
    pub input: String,
    pub expected: &'static str,
}

/// The longest duration a manifest may give (issue 17: `18446744073709551615ms` as a retry delay
/// made `reconcile diff` wait forever). No field needs more: the longest waits (a renotify
/// period, a re-benchmark) are hours to days.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 86_400);

/// What a duration looks like, for messages.
pub const DURATION_EXPECTED: &str =
    "a whole number followed by ms, s, m, h or d, e.g. 250ms, 5s, 10m, 1h30m";

impl FromStr for Dur {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let err =
            || UnitError { what: "duration", input: s.to_owned(), expected: DURATION_EXPECTED };
        if s.is_empty() {
            return Err(err());
        }
        let bytes = s.as_bytes();
        let mut i = 0;
        let mut total_ms: u128 = 0;
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i == start {
                return Err(err());
            }
            let n: u128 = s[start..i].parse().map_err(|_| err())?;
            let unit_start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            let factor: u128 = match &s[unit_start..i] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(err()),
            };
            total_ms =
                n.checked_mul(factor).and_then(|v| total_ms.checked_add(v)).ok_or_else(err)?;
        }
        if total_ms > MAX_DURATION.as_millis() {
            return Err(UnitError {
                what: "duration",
                input: s.to_owned(),
                expected: "at most 30d (no wait in a manifest is longer)",
            });
        }
        let ms = u64::try_from(total_ms).map_err(|_| err())?;
        Ok(Dur(Duration::from_millis(ms)))
    }
}

impl fmt::Display for Dur {
    /// Canonical form: the largest units first, e.g. `1h30m`, `5s`, `250ms`, `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        if ms > 0 {
            write!(f, "{ms}ms")?;
        }
        Ok(())
    }
}

/// A size in bytes written with a unit: `46GiB`, `512MB`, `1.5GiB`, `800B`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn gib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024 * 1024)
    }
    pub const fn mib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024)
    }
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

/// What a size looks like, for messages.
pub const SIZE_EXPECTED: &str =
    "a number followed by B, KB, MB, GB, TB, KiB, MiB, GiB or TiB, e.g. 46GiB or 512MB";

impl FromStr for ByteSize {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let err = || UnitError { what: "size", input: s.to_owned(), expected: SIZE_EXPECTED };
        let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(err)?;
        let (num, unit) = s.split_at(split);
        if num.is_empty()
            || num.starts_with('.')
            || num.ends_with('.')
            || num.matches('.').count() > 1
        {
            return Err(err());
        }
        let factor: u64 = match unit {
            "B" => 1,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            _ => return Err(err()),
        };
        // Integer arithmetic on the two halves keeps `1.5GiB` exact and avoids float rounding.
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        let int: u64 = int_part.parse().map_err(|_| err())?;
        let mut total = int.checked_mul(factor).ok_or_else(err)?;
        if !frac_part.is_empty() {
            if frac_part.len() > 9 {
                return Err(err());
            }
            let frac: u64 = frac_part.parse().map_err(|_| err())?;
            let scale = 10u64.pow(frac_part.len() as u32);
            let extra = (u128::from(frac) * u128::from(factor)) / u128::from(scale);
            total = total.checked_add(u64::try_from(extra).map_err(|_| err())?).ok_or_else(err)?;
        }
        Ok(ByteSize(total))
    }
}

impl fmt::Display for ByteSize {
    /// Canonical form: the largest IEC unit that divides the value exactly, else bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        for (unit, size) in
            [("TiB", 1u64 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)]
        {
            if v >= size && v.is_multiple_of(size) {
                return write!(f, "{}{unit}", v / size);
            }
        }
        write!(f, "{v}B")
    }
}

impl ByteSize {
    /// Human rendering for reports (`45.2 GiB`); not parseable, use `Display` for manifests.
    pub fn human(self) -> String {
        let v = self.0 as f64;
        for (unit, size) in
            [("TiB", 1u64 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)]
        {
            if self.0 >= size {
                return format!("{:.1} {unit}", v / size as f64);
            }
        }
        format!("{} B", self.0)
    }
}

macro_rules! string_unit_serde {
    ($ty:ty, $name:literal, $pattern:expr, $desc:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($desc)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
        impl JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": $pattern,
                    "description": $desc,
                })
            }
        }
    };
}

string_unit_serde!(Dur, "Duration", DURATION_PATTERN, "a duration such as 250ms, 5s, 10m or 1h30m");
string_unit_serde!(ByteSize, "Size", SIZE_PATTERN, "a size such as 46GiB or 512MB");

/// A temperature in degrees Celsius (a plain YAML number).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Celsius(pub f64);

impl JsonSchema for Celsius {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Celsius".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "number",
            "minimum": -50,
            "maximum": 150,
            "description": "a temperature in degrees Celsius",
        })
    }
}

impl fmt::Display for Celsius {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} °C", self.0)
    }
}

/// A fraction in `[0, 1]` (a plain YAML number, `0.66` for 66 %).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fraction(pub f64);

impl JsonSchema for Fraction {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Fraction".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "description": "a fraction between 0 and 1, e.g. 0.66 for 66 %",
        })
    }
}

impl fmt::Display for Fraction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", (self.0 * 1000.0).round() / 10.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_strictly() {
        assert_eq!("5s".parse::<Dur>().unwrap(), Dur::from_secs(5));
        assert_eq!("250ms".parse::<Dur>().unwrap(), Dur::from_millis(250));
        assert_eq!("1h30m".parse::<Dur>().unwrap(), Dur::from_secs(5400));
        assert_eq!("0s".parse::<Dur>().unwrap(), Dur::from_secs(0));
        for bad in [
            "",
            "5",
            "s",
            "5 s",
            "5sec",
            "-5s",
            "1.5s",
            "5S",
            "5s ",
            "1h30",
            "99999999999999999999d",
            "18446744073709551615ms",
            "31d",
            "30d1ms",
        ] {
            assert!(bad.parse::<Dur>().is_err(), "{bad:?} should not parse");
        }
        assert_eq!("30d".parse::<Dur>().unwrap().get(), MAX_DURATION);
        let e = "18446744073709551615ms".parse::<Dur>().unwrap_err().to_string();
        assert!(e.contains("at most 30d"), "{e}");
    }

    #[test]
    fn durations_render_canonically() {
        for (input, canonical) in
            [("90s", "1m30s"), ("5400s", "1h30m"), ("1500ms", "1s500ms"), ("0ms", "0s")]
        {
            let d: Dur = input.parse().unwrap();
            assert_eq!(d.to_string(), canonical);
            assert_eq!(canonical.parse::<Dur>().unwrap(), d);
        }
    }

    #[test]
    fn sizes_parse_strictly() {
        assert_eq!("46GiB".parse::<ByteSize>().unwrap(), ByteSize::gib(46));
        assert_eq!("512MB".parse::<ByteSize>().unwrap(), ByteSize(512_000_000));
        assert_eq!("1.5GiB".parse::<ByteSize>().unwrap(), ByteSize(3 << 29));
        assert_eq!("800B".parse::<ByteSize>().unwrap(), ByteSize(800));
        for bad in
            ["", "46", "GiB", "46 GiB", "46gib", "4.GiB", ".5GiB", "1.2.3GiB", "-1GiB", "46GiBs"]
        {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn sizes_round_trip() {
        for v in [0u64, 1, 1023, 1024, 5 << 30, (5 << 30) + 1, 512_000_000] {
            let s = ByteSize(v);
            assert_eq!(s.to_string().parse::<ByteSize>().unwrap(), s);
        }
    }
}
