//! The day a row of a sliced extract is of: its `slice_column`'s UTC day, whatever file it came
//! in. A run of some days keeps only the rows of those days; a row farther from its file's day
//! than `slice_tolerance`, or without a day, is quarantined in every run (so that the runs of
//! single days always add up to one run over every day). See [`dagrun_core::slice`].

use std::collections::BTreeSet;
use std::sync::Arc;

use dagrun_core::slice::Day;

/// How a sliced extract tells which rows are the run's.
#[derive(Debug, Clone)]
pub(crate) struct DayRule {
    /// The slice column's index among the extract's columns.
    pub column: usize,
    /// Its name, for messages.
    pub name: String,
    /// How many days a row's day may be from its file's.
    pub tolerance: u32,
    /// The run's days; `None`: every day.
    pub keep: Option<Arc<BTreeSet<Day>>>,
}

/// What becomes of one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// One of the run's rows.
    Keep,
    /// A row of a day another run replaces: left for it, not counted.
    OtherDay,
    /// Quarantined, for this reason.
    Bad(String),
}

impl DayRule {
    /// The verdict on a row whose slice column holds `millis` (epoch milliseconds; `None` when
    /// empty), read from a file of `file_day`.
    pub(crate) fn verdict(&self, millis: Option<i64>, file_day: Day) -> Verdict {
        let Some(ms) = millis else {
            return Verdict::Bad(format!(
                "column `{}` is empty: the row's day is unknown, so no run of a day would hold it",
                self.name
            ));
        };
        let day = Day::of_epoch_ms(ms);
        let distance = (day.0 - file_day.0).unsigned_abs();
        if distance > self.tolerance {
            return Verdict::Bad(format!(
                "column `{}` falls on {day}, {distance} days from its file's day {file_day}, farther than \
                 slice_tolerance ({}d): no run of its day reads this file",
                self.name, self.tolerance
            ));
        }
        match &self.keep {
            Some(days) if !days.contains(&day) => Verdict::OtherDay,
            _ => Verdict::Keep,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_of_its_data_day_within_the_tolerance_of_its_files_day() {
        let day = |s: &str| Day::parse(s).unwrap();
        let ms = |s: &str| i64::from(day(s).0) * 86_400_000;
        let rule = DayRule {
            column: 0,
            name: "start_time".into(),
            tolerance: 1,
            keep: Some(Arc::new([day("2018-11-05")].into())),
        };
        let file = day("2018-11-04");
        // Midnight of the 5th, in the file of the 4th: the 5th's row.
        assert_eq!(rule.verdict(Some(ms("2018-11-05")), file), Verdict::Keep);
        assert_eq!(rule.verdict(Some(ms("2018-11-05") - 1), file), Verdict::OtherDay);
        let Verdict::Bad(why) = rule.verdict(Some(ms("2018-11-07")), file) else { panic!() };
        assert!(why.contains("falls on 2018-11-07, 3 days from its file's day 2018-11-04"), "{why}");
        assert!(matches!(rule.verdict(None, file), Verdict::Bad(w) if w.contains("is empty")));
        let every = DayRule { keep: None, ..rule };
        assert_eq!(every.verdict(Some(ms("2018-11-03")), file), Verdict::Keep);
    }
}
