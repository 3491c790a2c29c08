//! The rule that keeps a run from writing over what it reads. After variables are resolved, no
//! output (a load's folder, the runs folder, the spill folder, EMR staging or logs) may be, lie
//! inside, or contain an extract's input or another output. Local paths are compared with their
//! symbolic links resolved, S3 URIs by bucket and prefix, always with folder semantics.
//!
//! Checking is near-linear in the number of places: each place looks up only the folders that
//! contain it.
//!
//! [`check_local`] adds what the disk says: no output lies inside a table that exists (a lake
//! inside a table's folder would be taken for the table's files), and no output path falls to
//! the file system's root because the variable it starts with is empty (`--set output=`).

use std::collections::HashMap;

use crate::diagnostic::{Diagnostic, Pos, SourceFile};
use crate::path::{self, Overlap};
use crate::vars::is_identifier;

/// Whether a run reads or writes a place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Input,
    Output,
}

/// A folder the run reads or writes, with where the pipeline says so.
#[derive(Debug, Clone)]
pub(crate) struct Place {
    pub role: Role,
    /// As resolved from the file and `--set`.
    pub path: String,
    /// The start of a sentence about it: "load `load_songs` writes", "the runs folder is".
    pub subject: String,
    /// How another sentence names it: "the input of extract `staging_songs`", "the runs folder".
    pub noun: String,
    pub pos: Pos,
    /// The run writes only into a new folder inside this one (the spill folder's `TMPDIR`): it
    /// may contain anything, but may not be or lie inside an input or output.
    pub fresh_child: bool,
}

impl Place {
    /// The folder an extract reads.
    pub(super) fn extract(id: &str, path: &str, pos: Pos) -> Self {
        Self::new(Role::Input, path, pos, format!("extract `{id}` reads"), format!("the input of extract `{id}`"))
    }

    /// The folder a load writes.
    pub(super) fn load(id: &str, path: &str, pos: Pos) -> Self {
        Self::new(Role::Output, path, pos, format!("load `{id}` writes"), format!("the output of load `{id}`"))
    }

    /// Another folder the run writes into: the runs folder, EMR staging.
    pub(super) fn output(name: &str, path: &str, pos: Pos) -> Self {
        Self::new(Role::Output, path, pos, format!("{name} is"), name.to_string())
    }

    fn new(role: Role, path: &str, pos: Pos, subject: String, noun: String) -> Self {
        Self { role, path: path.to_string(), subject, noun, pos, fresh_child: false }
    }
}

/// Reports every pair of places that overlap where one of them is written.
pub(crate) fn check(places: &[Place], diags: &mut Vec<Diagnostic>) {
    let resolved: Vec<String> =
        places.iter().map(|p| if p.path.trim().is_empty() { String::new() } else { path::resolve(&p.path) }).collect();
    let mut at: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, r) in resolved.iter().enumerate() {
        if !r.is_empty() {
            at.entry(r.as_str()).or_default().push(i);
        }
    }
    for (i, inner) in resolved.iter().enumerate() {
        if inner.is_empty() {
            continue;
        }
        for folder in path::ancestors_and_self(inner) {
            let Some(outers) = at.get(folder) else { continue };
            for &j in outers {
                // Each pair once: from the inner place, or from the first of two equal places.
                if j == i || (folder == inner && j < i) {
                    continue;
                }
                let (a, b) = (&places[i], &places[j]);
                if a.role == Role::Input && b.role == Role::Input {
                    continue;
                }
                let Some(relation) = path::overlap(inner, &resolved[j]) else { continue };
                // A fresh folder made inside `b` cannot hold `a`.
                if b.fresh_child && relation == Overlap::Inside {
                    continue;
                }
                diags.push(conflict(places, &resolved, i, j, relation));
            }
        }
    }
}

/// What marks a folder as a table: a Delta log, or dagrun's Parquet convention's manifest or the
/// marker of its first load. `None` when `dir` holds no table (or cannot be read).
pub(crate) fn table_marker(dir: &std::path::Path) -> Option<&'static str> {
    use crate::storage::{MANIFEST, TABLE_MARKER, delta::DELTA_LOG};
    if std::fs::read_dir(dir.join(DELTA_LOG)).is_ok_and(|mut entries| entries.next().is_some()) {
        return Some("a Delta log");
    }
    if dir.join(MANIFEST).is_file() {
        return Some("dagrun's table manifest");
    }
    if dir.join(TABLE_MARKER).is_file() {
        return Some("dagrun's table marker");
    }
    None
}

/// The checks that read the local disk and the variables: outputs inside an existing table, and
/// outputs at the root because their leading variable is empty.
pub(crate) fn check_local(places: &[Place], source: &SourceFile, empty_vars: &[&str], diags: &mut Vec<Diagnostic>) {
    for place in places.iter().filter(|p| p.role == Role::Output && !p.fresh_child) {
        if place.path.starts_with('/')
            && let Some(name) = leading_var(source, place.pos).filter(|n| empty_vars.contains(n))
        {
            diags.push(
                Diagnostic::error(
                    place.pos,
                    format!("`${{{name}}}` is empty, so {} {}, at the file system's root", place.subject, place.path),
                )
                .with_hint(format!("give `{name}` a folder (`--set {name}=DIR`)")),
            );
            continue;
        }
        if path::is_s3(&place.path) || place.path.trim().is_empty() {
            continue;
        }
        let resolved = path::resolve(&place.path);
        let above = path::ancestors_and_self(&resolved);
        for folder in above.iter().take(above.len().saturating_sub(1)) {
            if let Some(marker) = table_marker(std::path::Path::new(folder)) {
                diags.push(
                    Diagnostic::error(
                        place.pos,
                        format!(
                            "{} {}, inside the table {folder} (it holds {marker})",
                            place.subject,
                            shown(&place.path, &resolved)
                        ),
                    )
                    .with_hint(
                        "a folder inside a table is taken for the table's files: put the lake and its runs folder \
                         beside the table, not in it",
                    ),
                );
                break;
            }
        }
    }
}

/// The variable a path's text starts with in the file (`${output}/songs` gives `output`).
fn leading_var(source: &SourceFile, pos: Pos) -> Option<&str> {
    if !pos.is_known() {
        return None;
    }
    let line = source.line(pos.line)?;
    let text: &str = &line[line.char_indices().nth(pos.col.saturating_sub(1) as usize)?.0..];
    let text = text.trim_start_matches(['"', '\'']);
    let rest = text.strip_prefix("${")?;
    let name = &rest[..rest.find('}')?];
    is_identifier(name).then_some(name)
}

/// The diagnostic for places `i` and `j`, where `i` relates to `j` as `relation`. It points at
/// the place written (the later one of two outputs); the other is a note.
fn conflict(places: &[Place], resolved: &[String], i: usize, j: usize, relation: Overlap) -> Diagnostic {
    let (a, b) = (&places[i], &places[j]);
    let a_first = match (a.role, b.role) {
        (Role::Output, Role::Input) => true,
        (Role::Input, Role::Output) => false,
        _ => !b.pos.is_known() || (a.pos.is_known() && (a.pos.line, a.pos.col) > (b.pos.line, b.pos.col)),
    };
    let (main, other, relation, main_r, other_r) = if a_first {
        (a, b, relation, &resolved[i], &resolved[j])
    } else {
        let flipped = match relation {
            Overlap::Same => Overlap::Same,
            Overlap::Inside => Overlap::Contains,
            Overlap::Contains => Overlap::Inside,
        };
        (b, a, flipped, &resolved[j], &resolved[i])
    };
    let (subject, here, noun, there) =
        (&main.subject, shown(&main.path, main_r), &other.noun, shown(&other.path, other_r));
    let message = match relation {
        Overlap::Same => format!("{subject} {here}, the same folder as {noun}"),
        Overlap::Inside => format!("{subject} {here}, inside {noun} ({there})"),
        Overlap::Contains => format!("{subject} {here}, which contains {noun} ({there})"),
    };
    let hint = if main.role == Role::Output && other.role == Role::Input {
        "a run must never write where it reads: give every output a folder apart from every input"
    } else {
        "every output needs a folder of its own, apart from every other output"
    };
    let mut d = Diagnostic::error(main.pos, message).with_hint(hint);
    let note = format!("{} {}", other.subject, shown(&other.path, other_r));
    if other.pos.is_known() {
        d = d.with_note(other.pos, note);
    }
    d
}

/// A path as written, and what it resolves to when a symbolic link makes that differ.
fn shown(path: &str, resolved: &str) -> String {
    let written = path::normalize_path(path);
    if path::is_s3(path) || path::absolute(path) == resolved {
        written
    } else {
        format!("{written} (that is {resolved})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostic::SourceFile;

    fn pos(line: u32) -> Pos {
        Pos { line, col: 11, offset: None, len: 1 }
    }

    fn messages(places: &[Place]) -> Vec<String> {
        let mut diags = Vec::new();
        check(places, &mut diags);
        diags.iter().map(|d| format!("{}: {}", d.pos.line, d.message)).collect()
    }

    #[test]
    fn an_output_that_contains_an_input_is_refused_at_the_output() {
        let places = [
            Place::extract("songs", "s3://b/lake/songs/song_data", pos(3)),
            Place::load("load_songs", "s3://b/lake/songs", pos(9)),
        ];
        assert_eq!(
            messages(&places),
            ["9: load `load_songs` writes s3://b/lake/songs, which contains the input of extract `songs` \
                 (s3://b/lake/songs/song_data)"]
        );
    }

    #[test]
    fn inputs_may_overlap_each_other_but_outputs_may_not() {
        let places = [
            Place::extract("a", "s3://b/in", pos(1)),
            Place::extract("b", "s3://b/in/x", pos(2)),
            Place::load("l", "s3://b/out/t", pos(3)),
            Place::output("the runs folder", "s3://b/out/t/_dagrun", pos(4)),
        ];
        assert_eq!(
            messages(&places),
            ["4: the runs folder is s3://b/out/t/_dagrun, inside the output of load `l` (s3://b/out/t)"]
        );
    }

    #[test]
    fn an_output_inside_an_existing_table_or_at_the_root_by_an_empty_variable_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("lake/songs");
        std::fs::create_dir_all(table.join("_delta_log")).unwrap();
        std::fs::write(table.join("_delta_log/00000000000000000000.json"), "{}").unwrap();
        let source = SourceFile::new("p.yaml", "a: 1\n    path: ${output}/songs\n");
        let inner = format!("{}/songs/songplays", table.display());
        let places = [
            Place::load("load_songplays", &inner, pos(1)),
            Place::load("load_songs", &table.display().to_string(), pos(1)),
            Place::load("load_x", "/songs", Pos { line: 2, col: 11, offset: None, len: 1 }),
        ];
        let mut diags = Vec::new();
        check_local(&places, &source, &["output"], &mut diags);
        let messages: Vec<&str> = diags.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(
            messages[0].ends_with(&format!(
                "inside the table {} (it holds a Delta log)",
                path::resolve(&table.display().to_string())
            )),
            "{}",
            messages[0]
        );
        assert_eq!(messages[1], "`${output}` is empty, so load `load_x` writes /songs, at the file system's root");
    }

    #[test]
    fn the_spill_folder_may_hold_everything_but_not_lie_inside_an_input() {
        let mut tmp = Place::output("the spill folder (TMPDIR)", "s3://b", Pos::UNKNOWN);
        tmp.fresh_child = true;
        let places = [Place::extract("a", "s3://b/in", pos(1)), tmp.clone()];
        assert!(messages(&places).is_empty());
        tmp.path = "s3://b/in/tmp".into();
        let places = [Place::extract("a", "s3://b/in", pos(1)), tmp];
        assert_eq!(
            messages(&places),
            ["0: the spill folder (TMPDIR) is s3://b/in/tmp, inside the input of extract `a` (s3://b/in)"]
        );
    }
}
