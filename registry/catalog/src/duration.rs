//! The one duration grammar: manifest health-check timings (`10s`, `500ms`) and
//! signing validities (`365d`, `12h`, `2w`) are read by the same function.
//!
//! [`parse`] accepts what `humantime` does (`1h 30m`, `2days`, `90min`, `1.5h`; `m` is
//! minutes, `M` months) and a bare number of seconds (`30`), the form manifests have
//! always allowed. [`expiry_after`] turns a validity into an expiry date.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// What [`parse`] expects, for messages.
const EXAMPLES: &str = "e.g. 500ms, 30s, 12h, 365d, 2w or 1h 30m";

/// Why a text is not a usable duration.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DurationError {
    #[error("{text:?} is not a duration ({source}); expected {EXAMPLES}")]
    Invalid {
        /// The text as given (shortened to 80 characters).
        text: String,
        source: humantime::DurationError,
    },
    #[error("a validity of {text:?} is not positive: the document would expire at once")]
    NotPositive { text: String },
    #[error("a validity of {text:?} goes past the last date this tool can write")]
    TooLong { text: String },
}

/// Parses a duration: `500ms`, `30s`, `5m`, `12h`, `365d`, `2w`, `1h 30m`, `2days`, or a
/// bare number of seconds. Surrounding whitespace is ignored.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // A bare number is seconds; humantime wants a unit.
        if let Ok(secs) = text.parse::<u64>() {
            return Ok(Duration::from_secs(secs));
        }
    }
    humantime::parse_duration(text).map_err(|source| DurationError::Invalid {
        text: shorten(text),
        source,
    })
}

/// The expiry date of a document signed at `now` that is valid for `validity` (a
/// duration [`parse`] reads, which must be positive).
pub fn expiry_after(now: DateTime<Utc>, validity: &str) -> Result<DateTime<Utc>, DurationError> {
    let d = parse(validity)?;
    if d.is_zero() {
        return Err(DurationError::NotPositive {
            text: shorten(validity.trim()),
        });
    }
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(|| DurationError::TooLong {
            text: shorten(validity.trim()),
        })
}

fn shorten(text: &str) -> String {
    text.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;

    #[test]
    fn the_forms_manifests_and_the_signer_always_took_still_parse() {
        for (text, secs) in [
            ("1s", 1),
            ("30s", 30),
            ("0s", 0),
            ("5m", 5 * MINUTE),
            ("90m", 90 * MINUTE),
            ("1h", HOUR),
            ("12h", 12 * HOUR),
            ("30d", 30 * DAY),
            ("365d", 365 * DAY),
            ("2w", 14 * DAY),
            ("30", 30),
            (" 10s ", 10),
        ] {
            assert_eq!(parse(text).unwrap(), Duration::from_secs(secs), "{text}");
        }
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
    }

    #[test]
    fn humantime_forms_parse() {
        for (text, secs) in [
            ("1h 30m", HOUR + 30 * MINUTE),
            ("2days", 2 * DAY),
            ("1 day 12 hours", DAY + 12 * HOUR),
            ("90min", 90 * MINUTE),
            ("2 weeks", 14 * DAY),
            ("1hour 12min 5s", HOUR + 12 * MINUTE + 5),
        ] {
            assert_eq!(parse(text).unwrap(), Duration::from_secs(secs), "{text}");
        }
    }

    #[test]
    fn bad_input_is_refused_naming_the_text() {
        for text in ["", "soon", "ten", "5 parsecs", "-3d", "1h and 5m", "d"] {
            let e = parse(text).expect_err(text);
            assert!(matches!(e, DurationError::Invalid { .. }), "{text}: {e}");
            assert!(e.to_string().contains(&format!("{text:?}")), "{e}");
        }
    }

    #[test]
    fn an_expiry_needs_a_positive_validity_that_fits_a_date() {
        let now = Utc::now();
        assert_eq!(
            expiry_after(now, "365d").unwrap(),
            now + chrono::Duration::days(365)
        );
        assert_eq!(
            expiry_after(now, "1h 30m").unwrap(),
            now + chrono::Duration::minutes(90)
        );
        assert!(matches!(
            expiry_after(now, "0d"),
            Err(DurationError::NotPositive { .. })
        ));
        assert!(matches!(
            expiry_after(now, "99999999999999d"),
            Err(DurationError::TooLong { .. } | DurationError::Invalid { .. })
        ));
        assert!(matches!(
            expiry_after(now, "soon"),
            Err(DurationError::Invalid { .. })
        ));
    }
}
