//! `spec.trigger.schedule`: cron schedules as VolSync reads them (the five
//! fields and `@` descriptors of robfig/cron's `ParseStandard`), and when
//! they fire next, in UTC.
//!
//! The meaning follows robfig/cron v3: minute 0-59, hour 0-23, day of month
//! 1-31, month 1-12 or `jan`-`dec`, day of week 0-6 or `sun`-`sat` (Sunday is
//! 0; 7 is refused); `*` and `?` are the whole range; `a-b`, `a-b/s`, `*/s`
//! and `a/s` (from `a` to the end, every `s`) and comma lists. When the day
//! of month and the day of week are both restricted (neither starts with `*`
//! or `?`), a day matching either fires; otherwise a day must match both.

use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::civil::Date;
use k8s_openapi::jiff::tz::TimeZone;

/// The pattern VolSync's CRDs give `trigger.schedule`, so the API server
/// refuses what VolSync's refuses. It and [`Schedule::parse`] differ both
/// ways: it refuses names, `?` and `@midnight`, and lets `0 0 * * 7` and
/// `CRON_TZ=` through (its alternatives are anchored at one end each), so a
/// schedule can still be invalid when read.
pub const CRD_PATTERN: &str = r"^(@(annually|yearly|monthly|weekly|daily|hourly))|((((\d+,)*\d+|(\d+(\/|-)\d+)|\*(\/\d+)?)\s?){5})$";

/// How far ahead [`Schedule::next_after`] looks: the rarest day a schedule
/// can name, February 29, recurs within eight years (2096, then 2104), so a
/// schedule that finds nothing in this many days never fires.
const SEARCH_DAYS: u32 = 8 * 366;

/// The five fields of a schedule, as they are named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// 0-59.
    Minute,
    /// 0-23.
    Hour,
    /// 1-31.
    DayOfMonth,
    /// 1-12 or `jan`-`dec`.
    Month,
    /// 0-6 or `sun`-`sat`; Sunday is 0.
    DayOfWeek,
}

impl Field {
    const ALL: [Field; 5] = [
        Field::Minute,
        Field::Hour,
        Field::DayOfMonth,
        Field::Month,
        Field::DayOfWeek,
    ];

    /// The smallest and largest value.
    fn bounds(self) -> (u64, u64) {
        match self {
            Field::Minute => (0, 59),
            Field::Hour => (0, 23),
            Field::DayOfMonth => (1, 31),
            Field::Month => (1, 12),
            Field::DayOfWeek => (0, 6),
        }
    }

    /// The three-letter names of the values, from the smallest.
    fn names(self) -> &'static [&'static str] {
        match self {
            Field::Month => &[
                "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
            ],
            Field::DayOfWeek => &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
            _ => &[],
        }
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfMonth => "day of month",
            Field::Month => "month",
            Field::DayOfWeek => "day of week",
        })
    }
}

/// What is wrong with one field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Two commas in a row, or one at an end.
    #[error("a list entry is empty")]
    EmptyEntry,
    /// Neither digits nor, where the field has them, a name.
    #[error("{0:?} is not a number")]
    NotANumber(String),
    /// Neither digits nor a three-letter name.
    #[error("{0:?} is neither a number nor a three-letter name")]
    NotANumberOrName(String),
    /// Below the field's smallest value.
    #[error("{value} is below the minimum {min}")]
    BelowMinimum {
        /// The value written.
        value: u64,
        /// The field's smallest value.
        min: u64,
    },
    /// Above the field's largest value.
    #[error("{value} is above the maximum {max}")]
    AboveMaximum {
        /// The value written.
        value: u64,
        /// The field's largest value.
        max: u64,
    },
    /// 7 for Sunday, which some crons take and robfig/cron does not.
    #[error("7 is not a day of the week: Sunday is 0 (or sun), Saturday 6")]
    Seven,
    /// `b-a` with `b` after `a`.
    #[error("the range {start}-{end} ends before it starts")]
    Reversed {
        /// Where it starts.
        start: u64,
        /// Where it ends.
        end: u64,
    },
    /// `/0`.
    #[error("a step must be at least 1")]
    ZeroStep,
    /// `a/b/c`.
    #[error("more than one '/'")]
    TooManySlashes,
    /// `a-b-c`.
    #[error("more than one '-'")]
    TooManyHyphens,
}

/// Why a schedule does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Nothing at all.
    #[error("the schedule is empty")]
    Empty,
    /// Not five fields.
    #[error("expected 5 fields (minute hour day-of-month month day-of-week), found {0}")]
    FieldCount(usize),
    /// `CRON_TZ=` or `TZ=`.
    #[error("time zones (CRON_TZ=, TZ=) are not supported: schedules are in UTC")]
    TimeZone,
    /// `@every <duration>`, which VolSync's CRD pattern refuses too.
    #[error("@every is not supported: write the interval as cron fields, e.g. */15 * * * *")]
    Every,
    /// An `@` word that is not a descriptor.
    #[error(
        "unknown descriptor {0:?}: expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly"
    )]
    Descriptor(String),
    /// One field is wrong.
    #[error("{field} field {text:?}: {problem}")]
    Field {
        /// Which field.
        field: Field,
        /// The field as written.
        text: String,
        /// What is wrong with it.
        problem: Problem,
    },
}

/// A parsed schedule: the minutes, hours, days and months it fires on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// One bit per value of each field, in [`Field::ALL`]'s order.
    bits: [u64; 5],
    /// Both day fields are restricted, so a day matching either fires.
    either_day: bool,
}

impl Schedule {
    /// Parses five cron fields or an `@` descriptor, as VolSync does.
    pub fn parse(spec: &str) -> Result<Schedule, ScheduleError> {
        if spec.is_empty() {
            return Err(ScheduleError::Empty);
        }
        if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
            return Err(ScheduleError::TimeZone);
        }
        if spec.starts_with('@') {
            // Descriptors match exactly, as robfig/cron's do.
            return Schedule::parse_fields(match spec {
                "@yearly" | "@annually" => "0 0 1 1 *",
                "@monthly" => "0 0 1 * *",
                "@weekly" => "0 0 * * 0",
                "@daily" | "@midnight" => "0 0 * * *",
                "@hourly" => "0 * * * *",
                _ if spec.starts_with("@every ") => return Err(ScheduleError::Every),
                _ => return Err(ScheduleError::Descriptor(spec.into())),
            });
        }
        Schedule::parse_fields(spec)
    }

    /// Parses the five whitespace-separated fields.
    fn parse_fields(spec: &str) -> Result<Schedule, ScheduleError> {
        let texts: Vec<&str> = spec.split_whitespace().collect();
        if texts.len() != Field::ALL.len() {
            return Err(ScheduleError::FieldCount(texts.len()));
        }
        let mut bits = [0; 5];
        let mut star = [false; 5];
        for (i, (field, text)) in Field::ALL.into_iter().zip(texts).enumerate() {
            (bits[i], star[i]) =
                parse_field(field, text).map_err(|problem| ScheduleError::Field {
                    field,
                    text: text.into(),
                    problem,
                })?;
        }
        Ok(Schedule {
            bits,
            either_day: !star[2] && !star[4],
        })
    }

    /// The first time this schedule fires strictly after `after`, always
    /// on a whole minute; `None` if it never does (`0 0 30 2 *`).
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let first = Timestamp::from_second((after.as_second().div_euclid(60) + 1) * 60).ok()?;
        let first = TimeZone::UTC.to_datetime(first);
        let mut date = first.date();
        let mut from = (first.hour(), first.minute());
        for _ in 0..SEARCH_DAYS {
            if self.fires_on(date)
                && let Some((hour, minute)) = self.first_time_from(from)
            {
                return TimeZone::UTC.to_timestamp(date.at(hour, minute, 0, 0)).ok();
            }
            date = date.tomorrow().ok()?;
            from = (0, 0);
        }
        None
    }

    /// Whether `date` is one of the schedule's days.
    fn fires_on(&self, date: Date) -> bool {
        let [_, _, days, months, weekdays] = self.bits;
        let day = has(days, date.day());
        let weekday = has(weekdays, date.weekday().to_sunday_zero_offset());
        has(months, date.month())
            && if self.either_day {
                day || weekday
            } else {
                day && weekday
            }
    }

    /// The first hour and minute of the schedule at or after `from`.
    fn first_time_from(&self, (hour, minute): (i8, i8)) -> Option<(i8, i8)> {
        let [minutes, hours, ..] = self.bits;
        (hour..24).filter(|&h| has(hours, h)).find_map(|h| {
            let from = if h == hour { minute } else { 0 };
            (from..60).find(|&m| has(minutes, m)).map(|m| (h, m))
        })
    }
}

/// Whether the bit of `value` is set.
fn has(bits: u64, value: i8) -> bool {
    (bits >> value) & 1 == 1
}

/// One field's bits, and whether it starts with `*` or `?` (with no step
/// but 1), which decides how the two day fields combine.
fn parse_field(field: Field, text: &str) -> Result<(u64, bool), Problem> {
    let mut bits = 0;
    let mut star = false;
    for entry in text.split(',') {
        let (entry_bits, entry_star) = parse_entry(field, entry)?;
        bits |= entry_bits;
        star |= entry_star;
    }
    Ok((bits, star))
}

/// One list entry: `*`, `?`, `a`, `a-b`, each optionally `/step`.
fn parse_entry(field: Field, entry: &str) -> Result<(u64, bool), Problem> {
    if entry.is_empty() {
        return Err(Problem::EmptyEntry);
    }
    let (min, max) = field.bounds();
    let (range, step) = match entry.split_once('/') {
        None => (entry, None),
        Some((_, step)) if step.contains('/') => return Err(Problem::TooManySlashes),
        Some((range, step)) => (range, Some(number(step)?)),
    };
    let (start, end, star) = if range == "*" || range == "?" {
        (min, max, step.is_none_or(|s| s == 1))
    } else {
        match range.split_once('-') {
            // `a/step` runs from `a` to the end of the field.
            None => {
                let start = value(field, range)?;
                (start, if step.is_some() { max } else { start }, false)
            }
            Some((_, end)) if end.contains('-') => return Err(Problem::TooManyHyphens),
            Some((start, end)) => (value(field, start)?, value(field, end)?, false),
        }
    };
    if start < min {
        return Err(Problem::BelowMinimum { value: start, min });
    }
    if end > max {
        return Err(if field == Field::DayOfWeek && end == 7 {
            Problem::Seven
        } else {
            Problem::AboveMaximum { value: end, max }
        });
    }
    if start > end {
        return Err(Problem::Reversed { start, end });
    }
    let step = match step {
        Some(0) => return Err(Problem::ZeroStep),
        Some(step) => usize::try_from(step).unwrap_or(usize::MAX),
        None => 1,
    };
    let bits = (start..=end).step_by(step).fold(0, |bits, v| bits | 1 << v);
    Ok((bits, star))
}

/// A value of `field`: digits, or the field's three-letter name (any case).
fn value(field: Field, text: &str) -> Result<u64, Problem> {
    let names = field.names();
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        return Ok(field.bounds().0 + i as u64);
    }
    number(text).map_err(|e| match e {
        Problem::NotANumber(text) if !names.is_empty() => Problem::NotANumberOrName(text),
        e => e,
    })
}

/// Decimal digits; too many digits saturate, to be reported above the maximum.
fn number(text: &str) -> Result<u64, Problem> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::NotANumber(text.into()));
    }
    Ok(text.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::civil::Weekday;

    use super::*;

    /// `2024-..-..T..:..:..Z` as a timestamp.
    fn utc(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn next(spec: &str, after: &str) -> String {
        Schedule::parse(spec)
            .unwrap_or_else(|e| panic!("{spec}: {e}"))
            .next_after(utc(after))
            .map_or_else(|| "never".into(), |t| t.to_string())
    }

    #[test]
    fn schedules_fire_at_their_next_time() {
        // 2024-06-02 is a Sunday; 2024 is a leap year.
        #[rustfmt::skip]
        let table = [
            // A Monday job runs on Monday, the day after this Sunday.
            ("0 9 * * 1", "2024-06-02T12:00:00Z", "2024-06-03T09:00:00Z"),
            ("0 9 * * mon", "2024-06-02T12:00:00Z", "2024-06-03T09:00:00Z"),
            ("0 9 * * 0", "2024-06-01T12:00:00Z", "2024-06-02T09:00:00Z"),
            ("@daily", "2024-06-02T12:00:00Z", "2024-06-03T00:00:00Z"),
            ("@midnight", "2024-06-02T12:00:00Z", "2024-06-03T00:00:00Z"),
            ("@hourly", "2024-06-02T12:00:00Z", "2024-06-02T13:00:00Z"),
            ("@weekly", "2024-06-03T12:00:00Z", "2024-06-09T00:00:00Z"),
            ("@monthly", "2024-06-02T12:00:00Z", "2024-07-01T00:00:00Z"),
            ("@yearly", "2024-06-02T12:00:00Z", "2025-01-01T00:00:00Z"),
            ("@annually", "2024-06-02T12:00:00Z", "2025-01-01T00:00:00Z"),
            // Strictly after: a time on the schedule gives the one after it.
            ("*/15 * * * *", "2024-06-02T12:15:00Z", "2024-06-02T12:30:00Z"),
            ("*/15 * * * *", "2024-06-02T12:14:59.9Z", "2024-06-02T12:15:00Z"),
            ("*/15 * * * *", "2024-06-02T23:59:00Z", "2024-06-03T00:00:00Z"),
            // `a/s` runs from `a` to the end: 5, 20, 35, 50.
            ("5/15 * * * *", "2024-06-02T12:36:00Z", "2024-06-02T12:50:00Z"),
            ("5/15 * * * *", "2024-06-02T12:51:00Z", "2024-06-02T13:05:00Z"),
            ("10-30/10 * * * *", "2024-06-02T12:31:00Z", "2024-06-02T13:10:00Z"),
            ("0,30 6,18 * * *", "2024-06-02T06:30:00Z", "2024-06-02T18:00:00Z"),
            ("0 1-3 * * *", "2024-06-02T03:00:00Z", "2024-06-03T01:00:00Z"),
            ("0 0 * * MON-FRI", "2024-06-07T01:00:00Z", "2024-06-10T00:00:00Z"),
            ("0 0 * * Sat,sun", "2024-06-03T00:00:00Z", "2024-06-08T00:00:00Z"),
            ("0 0 1 JAN *", "2024-06-02T12:00:00Z", "2025-01-01T00:00:00Z"),
            ("0 0 1 jan-mar/2 *", "2024-01-02T00:00:00Z", "2024-03-01T00:00:00Z"),
            ("? ? ? ? ?", "2024-06-02T12:00:00Z", "2024-06-02T12:01:00Z"),
            // Both days restricted: the 15th or a Monday, whichever first.
            ("0 0 15 * 1", "2024-06-04T00:00:00Z", "2024-06-10T00:00:00Z"),
            ("0 0 15 * 1", "2024-06-11T00:00:00Z", "2024-06-15T00:00:00Z"),
            // One restricted: the 15th and a Monday (`*/1` is `*`).
            ("0 0 15 * *", "2024-06-04T00:00:00Z", "2024-06-15T00:00:00Z"),
            ("0 0 */1 * 1", "2024-06-04T00:00:00Z", "2024-06-10T00:00:00Z"),
            ("0 0 */2 * 1", "2024-06-04T00:00:00Z", "2024-06-05T00:00:00Z"),
            // February 29 comes in leap years only, and 2100 is not one.
            ("0 0 29 2 *", "2024-03-01T00:00:00Z", "2028-02-29T00:00:00Z"),
            ("0 0 29 2 *", "2096-03-01T00:00:00Z", "2104-02-29T00:00:00Z"),
            // Month ends: the 31st skips short months.
            ("0 0 31 * *", "2024-04-01T00:00:00Z", "2024-05-31T00:00:00Z"),
            ("0 0 30 * *", "2024-02-01T00:00:00Z", "2024-03-30T00:00:00Z"),
            ("59 23 31 12 *", "2024-12-31T23:59:00Z", "2025-12-31T23:59:00Z"),
            // A day that does not exist never comes.
            ("0 0 30 2 *", "2024-01-01T00:00:00Z", "never"),
            ("0 0 31 4,6,9,11 *", "2024-01-01T00:00:00Z", "never"),
        ];
        for (spec, after, expected) in table {
            assert_eq!(next(spec, after), expected, "{spec} after {after}");
        }
    }

    #[test]
    fn a_monday_schedules_next_run_is_a_monday() {
        let monday = Schedule::parse("0 9 * * 1").unwrap();
        let mut after = utc("2024-06-02T00:00:00Z"); // a Sunday
        for _ in 0..10 {
            after = monday.next_after(after).unwrap();
            let at = TimeZone::UTC.to_datetime(after);
            assert_eq!(at.weekday(), Weekday::Monday, "{after}");
            assert_eq!((at.hour(), at.minute()), (9, 0));
        }
    }

    #[test]
    fn invalid_schedules_say_which_field_and_why() {
        #[rustfmt::skip]
        let table = [
            ("", "the schedule is empty"),
            (
                "not a cron",
                "expected 5 fields (minute hour day-of-month month day-of-week), found 3",
            ),
            (
                "0 0 * * * *",
                "expected 5 fields (minute hour day-of-month month day-of-week), found 6",
            ),
            (
                "0 0 * * 7",
                r#"day of week field "7": 7 is not a day of the week: Sunday is 0 (or sun), Saturday 6"#,
            ),
            ("60 * * * *", r#"minute field "60": 60 is above the maximum 59"#),
            ("* 24 * * *", r#"hour field "24": 24 is above the maximum 23"#),
            ("0 0 0 * *", r#"day of month field "0": 0 is below the minimum 1"#),
            ("0 0 1 13 *", r#"month field "13": 13 is above the maximum 12"#),
            (
                "0 0 1 foo *",
                r#"month field "foo": "foo" is neither a number nor a three-letter name"#,
            ),
            ("x * * * *", r#"minute field "x": "x" is not a number"#),
            ("mon * * * *", r#"minute field "mon": "mon" is not a number"#),
            ("*/0 * * * *", r#"minute field "*/0": a step must be at least 1"#),
            ("5-1 * * * *", r#"minute field "5-1": the range 5-1 ends before it starts"#),
            ("1,,2 * * * *", r#"minute field "1,,2": a list entry is empty"#),
            ("1/2/3 * * * *", r#"minute field "1/2/3": more than one '/'"#),
            ("1-2-3 * * * *", r#"minute field "1-2-3": more than one '-'"#),
            ("-1 * * * *", r#"minute field "-1": "" is not a number"#),
            (
                "99999999999999999999 * * * *",
                r#"minute field "99999999999999999999": 18446744073709551615 is above the maximum 59"#,
            ),
            (
                "@reboot",
                r#"unknown descriptor "@reboot": expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly"#,
            ),
            (
                "@daily ",
                r#"unknown descriptor "@daily ": expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly"#,
            ),
            (
                "@every 1h",
                "@every is not supported: write the interval as cron fields, e.g. */15 * * * *",
            ),
            (
                "CRON_TZ=Europe/Paris 0 9 * * 1",
                "time zones (CRON_TZ=, TZ=) are not supported: schedules are in UTC",
            ),
        ];
        for (spec, message) in table {
            let error = Schedule::parse(spec).expect_err(spec);
            assert_eq!(error.to_string(), message, "{spec:?}");
        }
    }

    #[test]
    fn descriptors_are_their_five_fields() {
        for (descriptor, fields) in [
            ("@yearly", "0 0 1 1 *"),
            ("@annually", "0 0 1 1 *"),
            ("@monthly", "0 0 1 * *"),
            ("@weekly", "0 0 * * 0"),
            ("@daily", "0 0 * * *"),
            ("@midnight", "0 0 * * *"),
            ("@hourly", "0 * * * *"),
        ] {
            assert_eq!(Schedule::parse(descriptor), Schedule::parse(fields));
        }
    }
}
