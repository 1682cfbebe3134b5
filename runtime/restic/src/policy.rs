//! Retention policies: which snapshots of a group `forget` keeps, with the
//! meanings of restic's `forget --keep-*` options (VolSync's `retain`).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, TimeDelta, Timelike, Utc};

use crate::error::{Error, Result};
use crate::id::Id;

/// Which snapshots to keep, as VolSync's restic `retain` fields and
/// restic's `forget --keep-*` options have it. Snapshots are taken newest
/// first; each count keeps the newest snapshot of as many distinct
/// periods (hours, days, ISO weeks, months, years, in the time zone the
/// snapshot's time was written in); `within` keeps every snapshot newer
/// than that span before the newest one. A snapshot any rule keeps is kept.
/// As in restic 0.16 and later, a count that is not used up also keeps
/// the oldest snapshot. An empty policy keeps everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetainPolicy {
    /// Keep the last n snapshots (`--keep-last`).
    pub last: u32,
    /// Keep the newest snapshot of each of the last n hours with one.
    pub hourly: u32,
    /// … days.
    pub daily: u32,
    /// … ISO weeks.
    pub weekly: u32,
    /// … months.
    pub monthly: u32,
    /// … years.
    pub yearly: u32,
    /// Keep every snapshot newer than this span before the newest one
    /// (years, months and days counted in that snapshot's offset; restic
    /// does so too unless the offset is its own zone's, where it follows
    /// daylight saving time).
    pub within: Option<Span>,
}

/// A span of calendar time as restic writes it: `1y5m7d2h` (years,
/// months, days, hours; any may be left out).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// Years.
    pub years: u32,
    /// Months.
    pub months: u32,
    /// Days.
    pub days: u32,
    /// Hours.
    pub hours: u32,
}

impl FromStr for Span {
    type Err = Error;

    /// Parses restic's form: numbers each followed by `y`, `m`, `d` or `h`.
    fn from_str(s: &str) -> Result<Span> {
        let bad = |reason: String| Error::Policy {
            field: "within",
            reason,
        };
        let mut span = Span::default();
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(bad("empty: expected a span such as 3d4h".into()));
        }
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(bad(format!(
                    "{s:?}: expected a number at {rest:?} (a span such as 3d4h)"
                )));
            }
            let n: u32 = rest[..digits]
                .parse()
                .map_err(|_| bad(format!("{s:?}: {} is too large", &rest[..digits])))?;
            let slot = match rest[digits..].chars().next() {
                Some('y') => &mut span.years,
                Some('m') => &mut span.months,
                Some('d') => &mut span.days,
                Some('h') => &mut span.hours,
                Some(c) => {
                    return Err(bad(format!(
                        "{s:?}: unit {c:?} after {n} is not one of y, m, d, h"
                    )));
                }
                None => return Err(bad(format!("{s:?}: no unit after {n} (y, m, d or h)"))),
            };
            *slot = n;
            rest = &rest[digits + 1..];
        }
        Ok(span)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl Span {
    /// `t` less this span: calendar years, months and days first, with
    /// Go's `AddDate` normalisation (March 31 less a month is March 3 or
    /// 2), then hours as elapsed time, as restic computes it.
    fn before(&self, t: DateTime<FixedOffset>) -> DateTime<FixedOffset> {
        let local = t.naive_local();
        let months = i64::from(local.year()) * 12 + i64::from(local.month0())
            - i64::from(self.years) * 12
            - i64::from(self.months);
        let first = i32::try_from(months.div_euclid(12))
            .ok()
            .and_then(|y| NaiveDate::from_ymd_opt(y, months.rem_euclid(12) as u32 + 1, 1));
        let Some(day) = first.and_then(|first| {
            first.checked_add_signed(TimeDelta::days(
                i64::from(local.day()) - 1 - i64::from(self.days),
            ))
        }) else {
            return DateTime::<Utc>::MIN_UTC.fixed_offset();
        };
        let shifted = NaiveDateTime::new(day, local.time())
            .and_local_timezone(*t.offset())
            .single()
            .expect("a fixed offset maps every local time once");
        shifted - TimeDelta::hours(i64::from(self.hours))
    }
}

/// Why a snapshot is kept or removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The snapshot.
    pub id: Id,
    /// Its time.
    pub time: DateTime<FixedOffset>,
    /// The rules that keep it, in restic's words (`daily snapshot`,
    /// `within 3d`, `oldest monthly snapshot`); empty if it is removed.
    pub reasons: Vec<String>,
}

/// One count rule: how many periods are left, and the last period kept.
struct Bucket {
    left: u32,
    period: fn(&DateTime<FixedOffset>, usize) -> i64,
    last: Option<i64>,
    reason: &'static str,
}

impl RetainPolicy {
    /// Whether no rule is set (such a policy keeps everything).
    pub fn is_empty(&self) -> bool {
        [
            self.last,
            self.hourly,
            self.daily,
            self.weekly,
            self.monthly,
            self.yearly,
        ] == [0; 6]
            && self.within.is_none_or(|w| w == Span::default())
    }

    /// Splits one group's snapshots into those kept and those removed,
    /// both newest first. `now` bounds the newest snapshot `within` counts
    /// from: snapshots dated in the future are not it.
    pub fn apply(
        &self,
        snapshots: &[(Id, DateTime<FixedOffset>)],
        now: DateTime<Utc>,
    ) -> (Vec<Verdict>, Vec<Verdict>) {
        let mut list: Vec<Verdict> = snapshots
            .iter()
            .map(|&(id, time)| Verdict {
                id,
                time,
                reasons: Vec::new(),
            })
            .collect();
        // Newest first; equal times in a fixed order.
        list.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
        if self.is_empty() {
            for v in &mut list {
                v.reasons.push("policy is empty".into());
            }
            return (list, Vec::new());
        }
        let bucket = |left, period, reason| Bucket {
            left,
            period,
            last: None,
            reason,
        };
        let mut buckets = [
            bucket(self.last, |_, nr| nr as i64, "last snapshot"),
            bucket(self.hourly, hour, "hourly snapshot"),
            bucket(self.daily, |t, _| day(t), "daily snapshot"),
            bucket(self.weekly, week, "weekly snapshot"),
            bucket(self.monthly, month, "monthly snapshot"),
            bucket(self.yearly, |t, _| i64::from(t.year()), "yearly snapshot"),
        ];
        // The newest snapshot not in the future; none leaves `within` keeping all.
        let newest = list.iter().map(|v| v.time).find(|t| *t < now);
        let within = self
            .within
            .filter(|w| *w != Span::default())
            .map(|w| (w, newest.map(|t| w.before(t))));
        let oldest = list.len().saturating_sub(1);
        let (mut keep, mut remove) = (Vec::new(), Vec::new());
        for (nr, mut v) in list.into_iter().enumerate() {
            if let Some((span, since)) = within
                && since.is_none_or(|since| v.time > since)
            {
                v.reasons.push(format!("within {span}"));
            }
            for b in &mut buckets {
                if b.left == 0 {
                    continue;
                }
                let period = (b.period)(&v.time, nr);
                if b.last == Some(period) && nr != oldest {
                    continue;
                }
                // A count not used up keeps the oldest snapshot too, even
                // in a period already kept (restic 0.16 and later).
                v.reasons.push(if b.last == Some(period) {
                    format!("oldest {}", b.reason)
                } else {
                    b.reason.to_owned()
                });
                b.last = Some(period);
                b.left -= 1;
            }
            if v.reasons.is_empty() {
                remove.push(v);
            } else {
                keep.push(v);
            }
        }
        (keep, remove)
    }
}

/// A snapshot's period, as a number: `YYYYMMDD`, and so on.
fn day(t: &DateTime<FixedOffset>) -> i64 {
    i64::from(t.year()) * 10000 + i64::from(t.month()) * 100 + i64::from(t.day())
}

fn hour(t: &DateTime<FixedOffset>, _: usize) -> i64 {
    day(t) * 100 + i64::from(t.hour())
}

fn week(t: &DateTime<FixedOffset>, _: usize) -> i64 {
    let w = t.iso_week();
    i64::from(w.year()) * 100 + i64::from(w.week())
}

fn month(t: &DateTime<FixedOffset>, _: usize) -> i64 {
    i64::from(t.year()) * 100 + i64::from(t.month())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(time: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(time).unwrap()
    }

    /// Snapshots at `times` (ID i for the i-th), the policy applied as of
    /// 2030: the indexes kept, newest first, with their reasons.
    fn kept(policy: &RetainPolicy, times: &[&str]) -> Vec<(usize, Vec<String>)> {
        let list: Vec<_> = times
            .iter()
            .enumerate()
            .map(|(i, t)| (Id([i as u8; 32]), at(t)))
            .collect();
        let now = at("2030-01-01T00:00:00Z").to_utc();
        let (keep, remove) = policy.apply(&list, now);
        assert_eq!(keep.len() + remove.len(), times.len());
        assert!(remove.iter().all(|v| v.reasons.is_empty()));
        keep.into_iter()
            .map(|v| (v.id.0[0] as usize, v.reasons))
            .collect()
    }

    fn indexes(kept: &[(usize, Vec<String>)]) -> Vec<usize> {
        kept.iter().map(|k| k.0).collect()
    }

    #[test]
    fn spans_parse_as_restic_writes_them() {
        let span = |s: &str| s.parse::<Span>();
        assert_eq!(
            span("3d4h").unwrap(),
            Span {
                days: 3,
                hours: 4,
                ..Span::default()
            }
        );
        let full = span(" 1y5m7d2h ").unwrap();
        assert_eq!(
            (full.years, full.months, full.days, full.hours),
            (1, 5, 7, 2)
        );
        assert_eq!(full.to_string(), "1y5m7d2h");
        assert_eq!(span("2m").unwrap().to_string(), "2m");
        for bad in ["", "3", "d", "3x", "-1d", "3d4", "99999999999h"] {
            let err = span(bad).expect_err(bad);
            assert!(
                matches!(
                    &err,
                    Error::Policy {
                        field: "within",
                        ..
                    }
                ),
                "{bad}: {err:?}"
            );
        }
        assert_eq!(
            span("3w").unwrap_err().to_string(),
            r#"retention policy: within: "3w": unit 'w' after 3 is not one of y, m, d, h"#
        );
    }

    #[test]
    fn spans_count_back_as_go_adds_dates() {
        let back = |t: &str, s: &str| s.parse::<Span>().unwrap().before(at(t)).to_rfc3339();
        // February 31 is March 2 in a leap year, March 3 otherwise.
        assert_eq!(
            back("2024-03-31T10:00:00+02:00", "1m"),
            "2024-03-02T10:00:00+02:00"
        );
        assert_eq!(
            back("2023-03-31T10:00:00+02:00", "1m"),
            "2023-03-03T10:00:00+02:00"
        );
        assert_eq!(
            back("2024-01-10T01:00:00Z", "1y1m9d2h"),
            "2022-11-30T23:00:00+00:00"
        );
        assert_eq!(
            back("2024-02-29T12:00:00Z", "1y"),
            "2023-03-01T12:00:00+00:00"
        );
    }

    #[test]
    fn last_keeps_the_newest_whatever_their_order() {
        let times = [
            "2024-01-03T00:00:00Z",
            "2024-01-01T00:00:00Z",
            "2024-01-05T00:00:00Z",
            "2024-01-02T00:00:00Z",
            "2024-01-04T00:00:00Z",
        ];
        let policy = RetainPolicy {
            last: 3,
            ..RetainPolicy::default()
        };
        let kept = kept(&policy, &times);
        assert_eq!(indexes(&kept), [2, 4, 0]);
        assert!(kept.iter().all(|k| k.1 == ["last snapshot"]));
    }

    #[test]
    fn periods_keep_their_newest_snapshot_in_the_snapshots_own_offset() {
        let times = [
            "2024-01-01T08:00:00Z",
            "2024-01-01T20:00:00Z",
            // 2024-01-01T23:00Z, but January 2 where it was taken.
            "2024-01-02T01:00:00+02:00",
            "2024-01-03T09:00:00Z",
            "2024-01-03T09:59:59Z",
            "2024-01-03T10:00:00Z",
        ];
        let daily = RetainPolicy {
            daily: 3,
            ..RetainPolicy::default()
        };
        assert_eq!(indexes(&kept(&daily, &times)), [5, 2, 1]);
        let hourly = RetainPolicy {
            hourly: 3,
            ..RetainPolicy::default()
        };
        assert_eq!(indexes(&kept(&hourly, &times)), [5, 4, 2]);
    }

    #[test]
    fn weeks_are_iso_weeks_and_months_and_years_calendar_ones() {
        let times = [
            "2024-12-29T12:00:00Z", // Sunday of 2024-W52
            "2024-12-30T12:00:00Z", // Monday of 2025-W01
            "2025-01-05T12:00:00Z", // Sunday of 2025-W01
            "2025-01-06T12:00:00Z", // 2025-W02
            "2025-02-01T12:00:00Z",
        ];
        let weekly = RetainPolicy {
            weekly: 3,
            ..RetainPolicy::default()
        };
        assert_eq!(indexes(&kept(&weekly, &times)), [4, 3, 2]);
        let monthly = RetainPolicy {
            monthly: 3,
            ..RetainPolicy::default()
        };
        assert_eq!(indexes(&kept(&monthly, &times)), [4, 3, 1]);
        let yearly = RetainPolicy {
            yearly: 2,
            ..RetainPolicy::default()
        };
        assert_eq!(indexes(&kept(&yearly, &times)), [4, 1]);
    }

    #[test]
    fn a_count_left_over_keeps_the_oldest_snapshot() {
        let times = [
            "2024-01-01T08:00:00Z",
            "2024-01-01T09:00:00Z",
            "2024-01-02T08:00:00Z",
        ];
        let policy = RetainPolicy {
            daily: 5,
            ..RetainPolicy::default()
        };
        let kept = kept(&policy, &times);
        assert_eq!(indexes(&kept), [2, 1, 0]);
        assert_eq!(kept[2].1, ["oldest daily snapshot"]);
        // A count used up does not.
        let policy = RetainPolicy {
            daily: 2,
            ..RetainPolicy::default()
        };
        assert_eq!(indexes(&self::kept(&policy, &times)), [2, 1]);
    }

    #[test]
    fn within_counts_back_from_the_newest_snapshot_not_now() {
        let times = [
            "2020-06-01T00:00:00Z",
            "2020-06-08T00:00:00Z", // exactly 3d4h before the newest: out
            "2020-06-08T00:00:01Z",
            "2020-06-11T04:00:00Z",
            // In the future: kept, but not what `within` counts from.
            "2031-01-01T00:00:00Z",
        ];
        let policy = RetainPolicy {
            within: Some("3d4h".parse().unwrap()),
            ..RetainPolicy::default()
        };
        let kept = kept(&policy, &times);
        assert_eq!(indexes(&kept), [4, 3, 2]);
        assert!(kept.iter().all(|k| k.1 == ["within 3d4h"]));
    }

    #[test]
    fn rules_combine_and_every_reason_is_given() {
        let times = [
            "2023-12-31T10:00:00Z",
            "2024-01-01T10:00:00Z",
            "2024-01-01T11:00:00Z",
            "2024-01-02T10:00:00Z",
        ];
        let policy = RetainPolicy {
            last: 1,
            daily: 2,
            yearly: 2,
            ..RetainPolicy::default()
        };
        let kept = kept(&policy, &times);
        assert_eq!(
            kept,
            [
                (
                    3,
                    vec![
                        "last snapshot".to_owned(),
                        "daily snapshot".into(),
                        "yearly snapshot".into()
                    ]
                ),
                (2, vec!["daily snapshot".into()]),
                (0, vec!["yearly snapshot".into()]),
            ]
        );
    }

    #[test]
    fn an_empty_policy_keeps_everything() {
        let times = ["2024-01-01T10:00:00Z", "2024-01-02T10:00:00Z"];
        let policy = RetainPolicy {
            within: Some(Span::default()),
            ..RetainPolicy::default()
        };
        assert!(policy.is_empty());
        let kept = kept(&policy, &times);
        assert_eq!(indexes(&kept), [1, 0]);
        assert_eq!(kept[0].1, ["policy is empty"]);
    }
}
