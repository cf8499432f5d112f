//! Parsing of durations and sizes given on the command line (`--timeout 300ms`, `--max-output 64KiB`).
//!
//! Numbers are parsed exactly, in integer arithmetic: `1.5s` is 1,500,000,000 ns and `1.5MiB` is
//! 1,572,864 bytes, with no floating-point rounding in between. Errors are a [`UnitError`] whose
//! message is one line naming the value and what is accepted.

use std::time::Duration;

/// The longest duration accepted: a limit beyond a day is a mistake, not a plan.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// At most this many significant digits after the decimal point. Enough for any real value, and it
/// keeps the arithmetic exact in `u128`.
pub const MAX_FRACTION_DIGITS: usize = 20;

const DURATION_EXAMPLES: &str = "use e.g. 300ms, 2s, 1.5s (units: ns, us, ms, s, m, h)";
const SIZE_EXAMPLES: &str =
    "use e.g. 4096, 64KiB, 1MiB, 2GiB, 1GB (K/KiB, M/MiB, G/GiB, T/TiB: powers of 1024; kB, MB, GB, TB: powers of 1000)";

/// Which kind of value a [`UnitError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantity {
    /// A duration (`--timeout 300ms`).
    Duration,
    /// A size in bytes (`--max-output 64KiB`).
    Size,
}

impl std::fmt::Display for Quantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Quantity::Duration => "duration",
            Quantity::Size => "size",
        })
    }
}

/// Why a duration or size was refused. Its `Display` is the one-line message the CLI shows
/// after the flag's name; `text` is the value as the user wrote it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnitError {
    /// Nothing but white space.
    #[error("{quantity} is empty; {}", examples(*.quantity))]
    Empty {
        /// What was being parsed.
        quantity: Quantity,
    },
    /// A leading minus sign.
    #[error("{quantity} `{text}` {}", if *.quantity == Quantity::Size { "must not be negative" } else { "must be positive" })]
    Negative {
        /// What was being parsed.
        quantity: Quantity,
        /// The value as written.
        text: String,
    },
    /// No number, or a unit this parser does not know.
    #[error("{quantity} `{text}` is not understood; {}", examples(*.quantity))]
    NotUnderstood {
        /// What was being parsed.
        quantity: Quantity,
        /// The value as written.
        text: String,
    },
    /// A duration given as a bare number (is `2` seconds or milliseconds?).
    #[error("duration `{text}` has no unit; add one, e.g. {number}s or {number}ms (units: ns, us, ms, s, m, h)")]
    NoUnit {
        /// The value as written.
        text: String,
        /// The number in it.
        number: String,
    },
    /// A duration of zero.
    #[error("duration `{text}` must be positive")]
    Zero {
        /// The value as written.
        text: String,
    },
    /// A duration over [`MAX_DURATION`].
    #[error("duration `{text}` is longer than the maximum of 24h")]
    TooLong {
        /// The value as written.
        text: String,
    },
    /// A size over `usize::MAX` bytes.
    #[error("size `{text}` is too large (the maximum is {} bytes)", usize::MAX)]
    TooLarge {
        /// The value as written.
        text: String,
    },
    /// A size with a fraction of a byte (`1.3KiB`).
    #[error("size `{text}` is not a whole number of bytes")]
    NotWhole {
        /// The value as written.
        text: String,
    },
    /// More than [`MAX_FRACTION_DIGITS`] digits after the point.
    #[error(
        "{quantity} `{text}` has more than {MAX_FRACTION_DIGITS} digits after the decimal point"
    )]
    TooManyFractionDigits {
        /// What was being parsed.
        quantity: Quantity,
        /// The value as written.
        text: String,
    },
}

impl From<UnitError> for String {
    fn from(error: UnitError) -> String {
        error.to_string()
    }
}

fn examples(quantity: Quantity) -> &'static str {
    match quantity {
        Quantity::Duration => DURATION_EXAMPLES,
        Quantity::Size => SIZE_EXAMPLES,
    }
}

/// Parses a duration: a decimal number followed by a unit, e.g. `300ms`, `2s`, `1.5s`, `250us`,
/// `100ns`, `1m`.
///
/// Units: `ns`, `us` (or `µs`), `ms`, `s`, `m` (minutes), `h`, case-insensitive; a space between
/// the number and the unit is allowed. A plain number is an error (is `2` seconds or
/// milliseconds?), as are zero, negative values and anything over [`MAX_DURATION`] (24 hours).
/// Fractions finer than a nanosecond are rounded down.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let quantity = Quantity::Duration;
    let text = || s.to_string();
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err(UnitError::Empty { quantity });
    }
    if trimmed.starts_with('-') {
        return Err(UnitError::Negative {
            quantity,
            text: text(),
        });
    }
    let not_understood = || UnitError::NotUnderstood {
        quantity,
        text: text(),
    };
    let number = Decimal::split(trimmed).ok_or_else(not_understood)?;
    let nanos_per_unit: u128 = match number.unit.to_ascii_lowercase().as_str() {
        "" => {
            return Err(UnitError::NoUnit {
                text: text(),
                number: number.text.to_string(),
            })
        }
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        _ => return Err(not_understood()),
    };
    let too_long = || UnitError::TooLong { text: text() };
    let scaled = number
        .scale(nanos_per_unit)
        .map_err(
            |ScaleError::TooManyFractionDigits| UnitError::TooManyFractionDigits {
                quantity,
                text: text(),
            },
        )?
        .ok_or_else(too_long)?;
    if scaled.whole == 0 {
        return Err(UnitError::Zero { text: text() });
    }
    if scaled.whole > MAX_DURATION.as_nanos() {
        return Err(too_long());
    }
    // At most 24h in nanoseconds, so it fits a u64.
    let nanos = u64::try_from(scaled.whole).map_err(|_| too_long())?;
    Ok(Duration::from_nanos(nanos))
}

/// Parses a size in bytes: a plain number of bytes (`4096`) or a number with a unit (`64KiB`,
/// `1MiB`, `2GiB`, `1TiB`, `1GB`).
///
/// Units are case-insensitive. The IEC units `KiB`, `MiB`, `GiB`, `TiB` and the bare letters
/// `K`, `M`, `G`, `T` are binary multiples (1024, as bytejail has always read them: for
/// memory limits that is what people mean); the SI units `kB`, `MB`, `GB`, `TB` are decimal
/// (1000), as the standard and `parse-size` say. `B` means bytes. Fractions are allowed when
/// they come to a whole number of bytes (`1.5MiB`, `0.5KiB`), not otherwise (`1.3KiB`,
/// `1.5`). Zero is accepted: whether an empty limit makes sense is the caller's decision.
pub fn parse_size(s: &str) -> Result<usize, UnitError> {
    let quantity = Quantity::Size;
    let text = || s.to_string();
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err(UnitError::Empty { quantity });
    }
    if trimmed.starts_with('-') {
        return Err(UnitError::Negative {
            quantity,
            text: text(),
        });
    }
    let not_understood = || UnitError::NotUnderstood {
        quantity,
        text: text(),
    };
    let number = Decimal::split(trimmed).ok_or_else(not_understood)?;
    let multiple: u128 = match number.unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(not_understood()),
    };
    let too_large = || UnitError::TooLarge { text: text() };
    let scaled = number
        .scale(multiple)
        .map_err(
            |ScaleError::TooManyFractionDigits| UnitError::TooManyFractionDigits {
                quantity,
                text: text(),
            },
        )?
        .ok_or_else(too_large)?;
    if !scaled.exact {
        return Err(UnitError::NotWhole { text: text() });
    }
    usize::try_from(scaled.whole).map_err(|_| too_large())
}

/// A non-negative decimal number as written, and the unit text after it.
struct Decimal<'a> {
    /// The number as written, e.g. `1.5`.
    text: &'a str,
    /// Digits before the point (possibly empty, as in `.5`).
    integer: &'a str,
    /// Digits after the point, trailing zeros removed.
    fraction: &'a str,
    /// What follows the number, trimmed.
    unit: &'a str,
}

/// The value of a [`Decimal`] times a unit.
struct Scaled {
    /// The integer part of the value.
    whole: u128,
    /// False when the value had a fractional part that was dropped.
    exact: bool,
}

/// Why a [`Decimal`] could not be scaled.
enum ScaleError {
    TooManyFractionDigits,
}

impl<'a> Decimal<'a> {
    /// Splits `s` into a number (`12`, `1.5`, `.5`, `2.`) and a unit. None when there is no digit
    /// or more than one point.
    fn split(s: &'a str) -> Option<Decimal<'a>> {
        let end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (text, rest) = s.split_at(end);
        let (integer, fraction) = text.split_once('.').unwrap_or((text, ""));
        if fraction.contains('.') || (integer.is_empty() && fraction.is_empty()) {
            return None;
        }
        Some(Decimal {
            text,
            integer,
            fraction: fraction.trim_end_matches('0'),
            unit: rest.trim(),
        })
    }

    /// The value times `unit`, or `Ok(None)` when it does not fit in a `u128`.
    fn scale(&self, unit: u128) -> Result<Option<Scaled>, ScaleError> {
        if self.fraction.len() > MAX_FRACTION_DIGITS {
            return Err(ScaleError::TooManyFractionDigits);
        }
        let integer = if self.integer.is_empty() {
            0
        } else {
            // Only digits here, so the one failure is overflow.
            match self.integer.parse::<u128>() {
                Ok(value) => value,
                Err(_) => return Ok(None),
            }
        };
        let Some(whole) = integer.checked_mul(unit) else {
            return Ok(None);
        };
        if self.fraction.is_empty() {
            return Ok(Some(Scaled { whole, exact: true }));
        }
        // At most 20 digits: the fraction is below 10^20 and, with units of at most 2^42, the
        // product stays far below u128::MAX.
        let digits = u32::try_from(self.fraction.len()).unwrap_or(u32::MAX);
        let denominator = 10u128.pow(digits);
        let numerator = match self.fraction.parse::<u128>() {
            Ok(fraction) => fraction.checked_mul(unit),
            Err(_) => None,
        };
        let Some(numerator) = numerator else {
            return Ok(None);
        };
        Ok(whole
            .checked_add(numerator / denominator)
            .map(|whole| Scaled {
                whole,
                exact: numerator % denominator == 0,
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("300ms"), Ok(ms(300)));
        assert_eq!(parse_duration("2s"), Ok(ms(2000)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("250µs"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("100ns"), Ok(Duration::from_nanos(100)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("24h"), Ok(MAX_DURATION));
        assert_eq!(parse_duration("1440m"), Ok(MAX_DURATION));
    }

    #[test]
    fn duration_spelling_variants() {
        assert_eq!(parse_duration(" 2s "), Ok(ms(2000)));
        assert_eq!(parse_duration("2 s"), Ok(ms(2000)));
        assert_eq!(parse_duration("2S"), Ok(ms(2000)));
        assert_eq!(parse_duration("300MS"), Ok(ms(300)));
        assert_eq!(parse_duration(".5s"), Ok(ms(500)));
        assert_eq!(parse_duration("2.s"), Ok(ms(2000)));
        assert_eq!(parse_duration("0.001s"), Ok(ms(1)));
        assert_eq!(parse_duration("1.50000s"), Ok(ms(1500)));
        assert_eq!(parse_duration("007s"), Ok(ms(7000)));
    }

    #[test]
    fn duration_fractions_are_exact() {
        // 0.1 is not exact in binary floating point; the result must still be exactly 100 ms.
        assert_eq!(parse_duration("0.1s"), Ok(ms(100)));
        assert_eq!(parse_duration("1.000000001s"), Ok(Duration::new(1, 1)));
        // Below a nanosecond: rounded down.
        assert_eq!(parse_duration("1.5ns"), Ok(Duration::from_nanos(1)));
    }

    #[test]
    fn plain_number_asks_for_a_unit() {
        let err = parse_duration("2").unwrap_err().to_string();
        assert!(err.contains("`2` has no unit"), "{err}");
        assert!(err.contains("2s") && err.contains("2ms"), "{err}");
        let err = parse_duration("1.5").unwrap_err().to_string();
        assert!(err.contains("1.5s"), "{err}");
    }

    #[test]
    fn bad_durations() {
        let err = parse_duration("3x").unwrap_err().to_string();
        assert_eq!(
            err,
            "duration `3x` is not understood; use e.g. 300ms, 2s, 1.5s (units: ns, us, ms, s, m, h)"
        );
        for bad in [
            "s",
            "ms",
            ".s",
            "1.2.3s",
            "1e3ms",
            "two s",
            "2 seconds",
            "+2s",
            "2s5",
        ] {
            let err = parse_duration(bad).unwrap_err().to_string();
            assert!(err.contains("is not understood"), "{bad}: {err}");
            assert!(err.contains(&format!("`{bad}`")), "{bad}: {err}");
        }
        assert!(parse_duration("")
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(parse_duration("   ")
            .unwrap_err()
            .to_string()
            .contains("empty"));
    }

    #[test]
    fn duration_must_be_positive() {
        for bad in ["0s", "0ms", "0.0s", "-1s", "-0.5ms", "0.1ns"] {
            let err = parse_duration(bad).unwrap_err().to_string();
            assert!(err.contains("must be positive"), "{bad}: {err}");
        }
    }

    #[test]
    fn duration_is_capped_at_a_day() {
        for bad in [
            "25h",
            "24.000001h",
            "86400.000000001s",
            "1441m",
            "99999999999999999999999999999999h",
            "999999999999999999999999999999999999999999999999s",
        ] {
            let err = parse_duration(bad).unwrap_err().to_string();
            assert!(
                err.contains("longer than the maximum of 24h"),
                "{bad}: {err}"
            );
        }
        let err = parse_duration("1.000000000000000000001s")
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than 20 digits"), "{err}");
    }

    #[test]
    fn sizes_plain_and_binary() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1TiB"), Ok(1 << 40));
        assert_eq!(parse_size("100B"), Ok(100));
    }

    #[test]
    fn size_short_units_are_binary_and_case_insensitive() {
        for (text, value) in [
            ("1K", 1024),
            ("1k", 1024),
            ("1kib", 1024),
            ("1KIB", 1024),
            ("1M", 1 << 20),
            ("1mib", 1 << 20),
            ("1G", 1 << 30),
            ("1g", 1 << 30),
            ("1 MiB", 1 << 20),
            (" 8 k ", 8192),
            ("100b", 100),
        ] {
            assert_eq!(parse_size(text), Ok(value), "{text}");
        }
    }

    #[test]
    fn si_units_are_decimal() {
        for (text, value) in [
            ("1kB", 1_000),
            ("1KB", 1_000),
            ("64kb", 64_000),
            ("1MB", 1_000_000),
            ("1.5MB", 1_500_000),
            ("1GB", 1_000_000_000),
            ("1gb", 1_000_000_000),
            ("2 TB", 2_000_000_000_000),
        ] {
            assert_eq!(parse_size(text), Ok(value), "{text}");
        }
        // The same number with the IEC unit is the binary multiple.
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(
            parse_size("1.0005kB").unwrap_err().to_string(),
            "size `1.0005kB` is not a whole number of bytes"
        );
    }

    #[test]
    fn size_fractions_must_be_whole_bytes() {
        assert_eq!(parse_size("1.5MiB"), Ok(3 << 19));
        assert_eq!(parse_size("0.5KiB"), Ok(512));
        assert_eq!(parse_size(".25K"), Ok(256));
        assert_eq!(parse_size("1.0"), Ok(1));
        assert_eq!(parse_size("0.0009765625MiB"), Ok(1024));
        for bad in ["1.3KiB", "1.5", "0.1B", "0.0001KiB"] {
            let err = parse_size(bad).unwrap_err().to_string();
            assert_eq!(err, format!("size `{bad}` is not a whole number of bytes"));
        }
    }

    #[test]
    fn size_overflow_is_an_error() {
        let max = usize::MAX.to_string();
        assert_eq!(parse_size(&max), Ok(usize::MAX));
        for bad in [
            "18446744073709551616",
            "99999999999999999999999GiB",
            "17179869184GiB",
            "9999999999999999999999999999999999999999999999",
        ] {
            let err = parse_size(bad).unwrap_err().to_string();
            assert!(err.contains("is too large"), "{bad}: {err}");
            assert!(err.contains(&max), "{bad}: {err}");
        }
    }

    #[test]
    fn bad_sizes() {
        assert_eq!(
            parse_size("12 parsecs").unwrap_err().to_string(),
            "size `12 parsecs` is not understood; use e.g. 4096, 64KiB, 1MiB, 2GiB, 1GB \
             (K/KiB, M/MiB, G/GiB, T/TiB: powers of 1024; kB, MB, GB, TB: powers of 1000)"
        );
        for bad in [
            "KiB", "1XiB", "1Ki", "0x100", "1e6", "1,000", "1.2.3K", "+4", ".",
        ] {
            let err = parse_size(bad).unwrap_err().to_string();
            assert!(err.contains("is not understood"), "{bad}: {err}");
        }
        assert!(parse_size("-1")
            .unwrap_err()
            .to_string()
            .contains("must not be negative"));
        assert!(parse_size("").unwrap_err().to_string().contains("empty"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_duration(&s);
            let _ = parse_size(&s);
        }

        #[test]
        fn numbers_with_units_never_panic(n in "[0-9.]{0,30}", unit in "(|ns|us|ms|s|m|h|k|KiB|MB|g|TiB| b)") {
            let _ = parse_duration(&format!("{n}{unit}"));
            let _ = parse_size(&format!("{n}{unit}"));
        }

        #[test]
        fn whole_sizes_round_trip(n in 0u64..(1 << 40)) {
            proptest::prop_assert_eq!(parse_size(&n.to_string()), Ok(n as usize));
            proptest::prop_assert_eq!(parse_size(&format!("{n}KiB")), Ok((n as usize) << 10));
        }

        /// Against `parse-size`, a parser that is not ours, for the units whose meaning the
        /// standards fix (bare letters are binary here and decimal there, so they are left out).
        #[test]
        fn agrees_with_parse_size(n in 0u64..(1 << 20), unit in "(|B|kB|KB|MB|GB|KiB|MiB|GiB|TiB)") {
            let text = format!("{n}{unit}");
            let reference = parse_size::parse_size(&text);
            proptest::prop_assert_eq!(parse_size(&text).ok().map(|v| v as u64), reference.ok(), "{}", text);
        }

        #[test]
        fn milliseconds_round_trip(n in 1u64..86_400_000) {
            proptest::prop_assert_eq!(parse_duration(&format!("{n}ms")), Ok(ms(n)));
        }
    }
}
