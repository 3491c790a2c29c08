//! Slices of the input by date: incremental runs and backfills.
//!
//! An extract that declares `slice_path` (`{year}/{month}/{year}-{month}-{day}-*.json`) names the
//! day each of its files holds. A run can then be scoped to some days (`--partition 2018-11`,
//! `--since 2018-11-01 --until 2018-11-30`): that extract reads only those days' files, and every
//! load downstream of it replaces only what those days determine (its `mode`). This module owns
//! the calendar ([`Day`]), the templates ([`SliceTemplate`]), what the command line asks for
//! ([`SliceRequest`]) and what a run decided to do ([`RunSlice`]); [`crate::resume`] decides which
//! days are stale.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::path::compile_glob;
use serde::Serialize;

/// A calendar day (UTC), as days since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub i32);

impl Day {
    /// The day of a civil date, if it exists.
    pub fn from_ymd(year: i32, month: u32, day: u32) -> Option<Day> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        // Howard Hinnant's days_from_civil.
        let y = if month <= 2 { year - 1 } else { year };
        let era = if y >= 0 { y } else { y - 399 } / 400;
        let yoe = y - era * 400;
        let m = month as i32;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i32 - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Some(Day(era * 146_097 + doe - 719_468))
    }

    /// (year, month, day).
    pub fn ymd(self) -> (i32, u32, u32) {
        let z = self.0 + 719_468;
        let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let y = yoe + era * 400;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        (if m <= 2 { y + 1 } else { y }, m, d)
    }

    /// The UTC day of an instant in epoch milliseconds.
    pub fn of_epoch_ms(ms: i64) -> Day {
        Day(ms.div_euclid(86_400_000) as i32)
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Option<Day> {
        let mut parts = text.split('-');
        let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return None;
        }
        Day::from_ymd(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)
    }

    /// The next day.
    pub fn next(self) -> Day {
        Day(self.0 + 1)
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl Serialize for Day {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days in short: `2018-11-01..2018-11-04, 2018-11-09` (runs of consecutive days joined).
pub fn describe_days<'a>(days: impl IntoIterator<Item = &'a Day>) -> String {
    let mut runs: Vec<(Day, Day)> = Vec::new();
    for &d in days {
        match runs.last_mut() {
            Some((_, last)) if last.next() == d => *last = d,
            _ => runs.push((d, d)),
        }
    }
    let shown: Vec<String> =
        runs.iter().map(|(a, b)| if a == b { a.to_string() } else { format!("{a}..{b}") }).collect();
    if shown.len() > 6 { format!("{}, ... ({} ranges)", shown[..5].join(", "), shown.len()) } else { shown.join(", ") }
}

/// One piece of a `slice_path` template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
enum Piece {
    Literal(String),
    Year,
    Month,
    Day,
}

/// Where an extract's files of one day are, relative to its `path`:
/// `{year}/{month}/{year}-{month}-{day}-*.json`. `{year}` is four digits, `{month}` and `{day}`
/// two; the rest is a glob (`*` within a folder). A file whose path does not fit names no day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SliceTemplate {
    /// The template as written.
    pub text: String,
    #[serde(skip)]
    pieces: Vec<Piece>,
}

impl SliceTemplate {
    /// Parses a template; it must name `{year}`, `{month}` and `{day}`.
    pub fn parse(text: &str) -> Result<SliceTemplate, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        let mut literal = String::new();
        while let Some(open) = rest.find('{') {
            literal.push_str(&rest[..open]);
            let close = rest[open..].find('}').ok_or_else(|| format!("`{{` without `}}` in `{text}`"))? + open;
            let name = &rest[open + 1..close];
            let piece = match name {
                "year" => Piece::Year,
                "month" => Piece::Month,
                "day" => Piece::Day,
                other => {
                    return Err(format!(
                        "unknown placeholder `{{{other}}}` in `{text}`: expected {{year}}, {{month}} and {{day}}"
                    ));
                }
            };
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            }
            pieces.push(piece);
            rest = &rest[close + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        for (needed, name) in [(Piece::Year, "{year}"), (Piece::Month, "{month}"), (Piece::Day, "{day}")] {
            if !pieces.contains(&needed) {
                return Err(format!("`{text}` does not name {name}: a slice is a day"));
            }
        }
        Ok(SliceTemplate { text: text.to_string(), pieces })
    }

    /// The template with `day` filled in: a glob relative to the extract's path.
    pub fn glob_for(&self, day: Day) -> String {
        let (y, m, d) = day.ymd();
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Literal(l) => l.clone(),
                Piece::Year => format!("{y:04}"),
                Piece::Month => format!("{m:02}"),
                Piece::Day => format!("{d:02}"),
            })
            .collect()
    }

    /// The folder that holds every file of `day` (`2018/11/`), to list instead of the whole input.
    pub fn folder_for(&self, day: Day) -> String {
        let glob = self.glob_for(day);
        let literal_end = glob.find(['*', '?', '[', '{']).unwrap_or(glob.len());
        match glob[..literal_end].rfind('/') {
            Some(slash) => glob[..=slash].to_string(),
            None => String::new(),
        }
    }

    /// The day a file holds, from its path relative to the extract's path.
    pub fn day_of(&self, relative: &str) -> Option<Day> {
        let (mut y, mut m, mut d) = (None::<i32>, None::<u32>, None::<u32>);
        let mut at = 0;
        // Placeholders first; what follows them is matched as a glob on the remainder.
        for (i, piece) in self.pieces.iter().enumerate() {
            let rest = &relative[at..];
            match piece {
                Piece::Literal(lit) => {
                    let last = i + 1 == self.pieces.len();
                    let globby = lit.contains(['*', '?', '[']);
                    if globby {
                        // Everything after a glob piece is checked by the glob itself.
                        let remaining: String = self.pieces[i..]
                            .iter()
                            .map(|p| match p {
                                Piece::Literal(l) => l.clone(),
                                Piece::Year => "[0-9][0-9][0-9][0-9]".into(),
                                Piece::Month | Piece::Day => "[0-9][0-9]".into(),
                            })
                            .collect();
                        let matcher = compile_glob(&remaining).ok()?;
                        if !matcher.is_match(rest) {
                            return None;
                        }
                        // Placeholders after the glob are not read.
                        if y.is_none() || m.is_none() || d.is_none() {
                            return None;
                        }
                        break;
                    }
                    if !rest.starts_with(lit.as_str()) || (last && rest.len() != lit.len()) {
                        return None;
                    }
                    at += lit.len();
                }
                Piece::Year | Piece::Month | Piece::Day => {
                    let width = if *piece == Piece::Year { 4 } else { 2 };
                    let digits = rest.get(..width).filter(|s| s.bytes().all(|b| b.is_ascii_digit()))?;
                    let value: u32 = digits.parse().ok()?;
                    let slot_ok = match piece {
                        Piece::Year => *y.get_or_insert(value as i32) == value as i32,
                        Piece::Month => *m.get_or_insert(value) == value,
                        _ => *d.get_or_insert(value) == value,
                    };
                    if !slot_ok {
                        return None;
                    }
                    at += width;
                    if i + 1 == self.pieces.len() && at != relative.len() {
                        return None;
                    }
                }
            }
        }
        Day::from_ymd(y?, m?, d?)
    }
}

/// What the command line asks for: every day from `since` to `until`, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceRequest {
    /// The first day.
    pub since: Day,
    /// The last day.
    pub until: Day,
}

impl SliceRequest {
    /// `--partition`: a year (`2018`), a month (`2018-11`) or a day (`2018-11-05`).
    pub fn partition(text: &str) -> Result<SliceRequest, String> {
        let bad = || format!("--partition {text}: expected a year (2018), a month (2018-11) or a day (2018-11-05)");
        let parts: Vec<&str> = text.split('-').collect();
        let num = |s: &str, width: usize| -> Result<u32, String> {
            if s.len() == width && s.bytes().all(|b| b.is_ascii_digit()) {
                s.parse().map_err(|_| bad())
            } else {
                Err(bad())
            }
        };
        match parts.as_slice() {
            [y] => {
                let y = num(y, 4)? as i32;
                Ok(SliceRequest {
                    since: Day::from_ymd(y, 1, 1).ok_or_else(bad)?,
                    until: Day::from_ymd(y, 12, 31).ok_or_else(bad)?,
                })
            }
            [y, m] => {
                let (y, m) = (num(y, 4)? as i32, num(m, 2)?);
                let first = Day::from_ymd(y, m, 1).ok_or_else(bad)?;
                Ok(SliceRequest { since: first, until: Day::from_ymd(y, m, days_in_month(y, m)).ok_or_else(bad)? })
            }
            [_, _, _] => {
                let day = Day::parse(text).ok_or_else(bad)?;
                Ok(SliceRequest { since: day, until: day })
            }
            _ => Err(bad()),
        }
    }

    /// `--since` and `--until` (`YYYY-MM-DD`); either may be missing, but not both.
    pub fn range(since: Option<&str>, until: Option<&str>, today: Day) -> Result<SliceRequest, String> {
        let parse = |flag: &str, text: &str| {
            Day::parse(text).ok_or_else(|| format!("{flag} {text}: expected a date such as 2018-11-01"))
        };
        let since = match since {
            Some(s) => parse("--since", s)?,
            None => return Err("--until needs --since: the first day of the range".into()),
        };
        let until = match until {
            Some(u) => parse("--until", u)?,
            None => today,
        };
        if until < since {
            return Err(format!("--until {until} is before --since {since}"));
        }
        Ok(SliceRequest { since, until })
    }

    /// Its days.
    pub fn days(&self) -> BTreeSet<Day> {
        (self.since.0..=self.until.0).map(Day).collect()
    }

    /// `2018-11-05` or `2018-11-01..2018-11-30`.
    pub fn describe(&self) -> String {
        if self.since == self.until { self.since.to_string() } else { format!("{}..{}", self.since, self.until) }
    }
}

/// What a run does with the days of its sliced extracts, decided before any task runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSlice {
    /// What the command line asked for (`None`: every day of the input).
    pub requested: Option<SliceRequest>,
    /// The days this run reads and replaces: the requested days that some load needs.
    pub days: BTreeSet<Day>,
    /// For each load downstream of a sliced extract (by task index): the fingerprint of each day
    /// of its table once this run has committed it, recorded with the commit.
    pub records: BTreeMap<usize, BTreeMap<String, String>>,
    /// For each such load: the fingerprint of each file day of the input its rows were read
    /// from, recorded with the commit (a merge cannot take rows back: a file day that changed,
    /// rather than grew, makes its table rebuilt from every day).
    pub file_records: BTreeMap<usize, BTreeMap<String, String>>,
    /// Why this run rebuilds from every day what a run of some days would only have updated.
    pub rebuilt: Option<String>,
    /// Loads that replace their whole table: every day it holds is one this run replaces.
    pub whole: BTreeSet<usize>,
    /// Whether the days were decided ([`crate::resume::assess`]); until then every file is read.
    pub decided: bool,
}

impl RunSlice {
    /// Whether this run reads a file of a sliced extract: its day is within `tolerance` days of
    /// one of the run's days (its rows may be of those days).
    pub fn reads(&self, template: &SliceTemplate, relative: &str, tolerance: u32) -> bool {
        !self.decided || template.day_of(relative).is_some_and(|d| self.near(d, tolerance))
    }

    /// Whether one of the run's days is within `tolerance` days of `day`.
    pub fn near(&self, day: Day, tolerance: u32) -> bool {
        let t = tolerance as i32;
        self.days.range(Day(day.0 - t)..=Day(day.0 + t)).next().is_some()
    }

    /// The run's days, when decided (`None`: every row is the run's).
    pub fn kept_days(&self) -> Option<&BTreeSet<Day>> {
        self.decided.then_some(&self.days)
    }
}

/// The days whose rows a file of day `file_day` may hold: `tolerance` days either side.
pub fn window(file_day: Day, tolerance: u32) -> impl Iterator<Item = Day> {
    let t = tolerance as i32;
    (file_day.0 - t..=file_day.0 + t).map(Day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip_through_the_calendar() {
        for (text, n) in [("1970-01-01", 0), ("2018-11-01", 17836), ("2000-02-29", 11016), ("2019-01-01", 17897)] {
            let d = Day::parse(text).unwrap();
            assert_eq!(d.0, n, "{text}");
            assert_eq!(d.to_string(), text);
        }
        assert!(Day::parse("2018-02-29").is_none());
        assert!(Day::parse("2018-13-01").is_none());
        assert_eq!(Day::of_epoch_ms(1_541_105_830_796).to_string(), "2018-11-01");
        assert_eq!(Day::of_epoch_ms(-1).to_string(), "1969-12-31");
    }

    #[test]
    fn a_template_names_the_day_of_each_file_and_the_folder_to_list() {
        let t = SliceTemplate::parse("{year}/{month}/{year}-{month}-{day}-*.json").unwrap();
        assert_eq!(t.day_of("2018/11/2018-11-05-events.json"), Day::parse("2018-11-05"));
        assert_eq!(t.day_of("2018/12/2018-11-05-events.json"), None, "month disagrees");
        assert_eq!(t.day_of("2018/11/notes.txt"), None);
        assert_eq!(t.day_of("2018/11/2018-11-31-events.json"), None, "no such day");
        let day = Day::parse("2018-11-05").unwrap();
        assert_eq!(t.glob_for(day), "2018/11/2018-11-05-*.json");
        assert_eq!(t.folder_for(day), "2018/11/");
        let flat = SliceTemplate::parse("events-{year}{month}{day}.jsonl").unwrap();
        assert_eq!(flat.day_of("events-20181105.jsonl"), Day::parse("2018-11-05"));
        assert_eq!(flat.day_of("events-20181105.jsonl.gz"), None);
        assert_eq!(flat.folder_for(day), "");
        assert!(SliceTemplate::parse("{year}/{month}/*.json").unwrap_err().contains("{day}"));
        assert!(SliceTemplate::parse("{yyyy}/{day}").unwrap_err().contains("unknown placeholder"));
    }

    #[test]
    fn partitions_name_a_year_a_month_or_a_day() {
        let r = SliceRequest::partition("2018-11").unwrap();
        assert_eq!(r.describe(), "2018-11-01..2018-11-30");
        assert_eq!(SliceRequest::partition("2016-02").unwrap().until.to_string(), "2016-02-29");
        assert_eq!(SliceRequest::partition("2018").unwrap().days().len(), 365);
        assert_eq!(SliceRequest::partition("2018-11-05").unwrap().describe(), "2018-11-05");
        assert!(SliceRequest::partition("2018-1").is_err());
        assert!(SliceRequest::partition("nov").is_err());
        let today = Day::parse("2018-12-02").unwrap();
        assert_eq!(SliceRequest::range(Some("2018-11-30"), None, today).unwrap().days().len(), 3);
        assert!(SliceRequest::range(Some("2018-11-30"), Some("2018-11-01"), today).unwrap_err().contains("before"));
        assert!(SliceRequest::range(None, Some("2018-11-01"), today).is_err());
    }

    #[test]
    fn a_run_of_a_day_reads_the_files_of_its_neighbours_and_keeps_its_own_rows() {
        let t = SliceTemplate::parse("{year}/{month}/{year}-{month}-{day}-*.json").unwrap();
        let day = Day::parse("2018-11-05").unwrap();
        let slice = RunSlice { days: [day].into(), decided: true, ..RunSlice::default() };
        let file = |d: &str| format!("2018/11/{d}-events.json");
        assert!(slice.reads(&t, &file("2018-11-04"), 1) && slice.reads(&t, &file("2018-11-06"), 1));
        assert!(!slice.reads(&t, &file("2018-11-07"), 1));
        assert!(!slice.reads(&t, &file("2018-11-04"), 0) && slice.reads(&t, &file("2018-11-05"), 0));
        assert_eq!(slice.kept_days(), Some(&[day].into()));
        assert!(RunSlice::default().reads(&t, &file("2018-11-30"), 0), "undecided: every file");
        let w: Vec<String> = window(day, 1).map(|d| d.to_string()).collect();
        assert_eq!(w, ["2018-11-04", "2018-11-05", "2018-11-06"]);
    }

    #[test]
    fn days_are_described_as_ranges() {
        let days: Vec<Day> =
            ["2018-11-01", "2018-11-02", "2018-11-03", "2018-11-07"].iter().map(|d| Day::parse(d).unwrap()).collect();
        assert_eq!(describe_days(&days), "2018-11-01..2018-11-03, 2018-11-07");
    }
}
