//! Located configuration problems: a message, a position in the pipeline file, the source line with a
//! caret under the offending text, and an optional hint ("did you mean `load_songs`?").
//!
//! Every config error dagrun reports goes through [`Diagnostic`]; [`Diagnostics`] renders a batch of
//! them the way `validate` prints them. Nothing here knows about pipelines: it only knows text.

use std::fmt;
use std::sync::Arc;

/// A pipeline file's name (as the user spelled it) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// The name as the user spelled it (`pipelines/sparkify.yaml`).
    pub name: String,
    /// The whole text.
    pub text: String,
    /// Byte offsets where lines start, made on first use: positions are found by binary search,
    /// so locating every node of a 20,000-task file stays linear.
    line_starts: std::sync::OnceLock<Vec<usize>>,
}

impl SourceFile {
    /// A source file, shared.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Arc<Self> {
        Arc::new(Self { name: name.into(), text: text.into(), line_starts: std::sync::OnceLock::new() })
    }

    fn line_starts(&self) -> &[usize] {
        self.line_starts
            .get_or_init(|| std::iter::once(0).chain(self.text.match_indices('\n').map(|(i, _)| i + 1)).collect())
    }

    /// The text of 1-based line `line`, without its line break.
    pub fn line(&self, line: u32) -> Option<&str> {
        let starts = self.line_starts();
        let start = *starts.get((line as usize).checked_sub(1)?)?;
        if start >= self.text.len() && line > 1 {
            return None;
        }
        let end = starts.get(line as usize).map_or(self.text.len(), |&next| next - 1);
        Some(self.text[start..end].trim_end_matches('\r'))
    }

    /// The position of a byte offset, as 1-based line and character column.
    pub(crate) fn pos_of_offset(&self, offset: usize, len: usize) -> Pos {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let starts = self.line_starts();
        let index = starts.partition_point(|&s| s <= offset) - 1;
        let col = self.text[starts[index]..offset].chars().count() as u32 + 1;
        Pos { line: index as u32 + 1, col, offset: Some(offset), len }
    }
}

/// A place in a source file. `line` and `col` are 1-based (0 means unknown); `col` counts characters.
/// `offset` is the byte offset when known, `len` the length in bytes of the text to underline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Pos {
    /// The 1-based line; 0 when unknown.
    pub line: u32,
    /// The 1-based column, in characters; 0 when unknown.
    pub col: u32,
    /// The byte offset, when known.
    pub offset: Option<usize>,
    /// How many bytes to underline.
    pub len: usize,
}

impl Pos {
    pub(crate) const UNKNOWN: Pos = Pos { line: 0, col: 0, offset: None, len: 0 };

    pub(crate) fn is_known(&self) -> bool {
        self.line > 0
    }
}

/// How serious a diagnostic is: errors stop the run (exit code 2), warnings are only printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Stops the run: exit 2.
    Error,
    /// Printed only.
    Warning,
}

/// One located problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Where the problem is.
    pub pos: Pos,
    /// What the problem is, in one sentence.
    pub message: String,
    /// How to fix it, when there is a likely fix.
    pub hint: Option<String>,
    /// Other places the problem involves, each drawn with its own source line.
    pub notes: Vec<Note>,
}

/// A second place a diagnostic points at ("the input it overlaps is read here").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The other place.
    pub pos: Pos,
    /// What is there.
    pub message: String,
}

impl Diagnostic {
    /// An error at `pos`.
    pub fn error(pos: Pos, message: impl Into<String>) -> Self {
        Self { severity: Severity::Error, pos, message: message.into(), hint: None, notes: Vec::new() }
    }

    /// A warning at `pos`.
    pub fn warning(pos: Pos, message: impl Into<String>) -> Self {
        Self { severity: Severity::Warning, pos, message: message.into(), hint: None, notes: Vec::new() }
    }

    /// Adds another located place to the diagnostic.
    pub(crate) fn with_note(mut self, pos: Pos, message: impl Into<String>) -> Self {
        self.notes.push(Note { pos, message: message.into() });
        self
    }

    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub(crate) fn with_hint_opt(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }
}

/// A batch of diagnostics about one source file, sorted by position when rendered.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    /// The file they are about.
    pub source: Arc<SourceFile>,
    /// The problems, sorted by position.
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// The problems of one file, sorted by position and without repeats.
    pub fn new(source: Arc<SourceFile>, mut items: Vec<Diagnostic>) -> Self {
        items.sort_by_key(|a| (a.pos.line, a.pos.col, a.severity));
        items.dedup();
        Self { source, items }
    }

    /// The errors.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity == Severity::Error)
    }

    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity == Severity::Warning)
    }

    /// Renders one diagnostic: `file:line:col: error: message`, the source line, a caret, its
    /// notes the same way, then a hint.
    pub(crate) fn render_one(&self, d: &Diagnostic, out: &mut String) {
        let level = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        self.render_place(d.pos, level, &d.message, out);
        for note in &d.notes {
            self.render_place(note.pos, "note", &note.message, out);
        }
        if let Some(hint) = &d.hint {
            use std::fmt::Write;
            let _ = writeln!(out, "  = hint: {hint}");
        }
    }

    fn render_place(&self, pos: Pos, level: &str, message: &str, out: &mut String) {
        use std::fmt::Write;
        if pos.is_known() {
            let _ = writeln!(out, "{}:{}:{}: {level}: {message}", self.source.name, pos.line, pos.col);
            if let Some(text) = self.source.line(pos.line) {
                let number = pos.line.to_string();
                let gutter = " ".repeat(number.len());
                let _ = writeln!(out, " {number} | {text}");
                let col = pos.col.max(1) as usize;
                let lead: String = text.chars().take(col - 1).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
                let width = caret_width(text, col, pos.len);
                let _ = writeln!(out, " {gutter} | {lead}{}", "^".repeat(width));
            }
        } else {
            let _ = writeln!(out, "{}: {level}: {message}", self.source.name);
        }
    }

    /// Everything as `validate` prints it, with a count of errors and warnings at the end.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for d in &self.items {
            self.render_one(d, &mut out);
        }
        let errors = self.errors().count();
        let warnings = self.warnings().count();
        if errors > 0 {
            use std::fmt::Write;
            let plural = if errors == 1 { "" } else { "s" };
            let _ = write!(out, "{errors} error{plural}");
            if warnings > 0 {
                let plural = if warnings == 1 { "" } else { "s" };
                let _ = write!(out, " and {warnings} warning{plural}");
            }
            let _ = writeln!(out, " in {}", self.source.name);
        }
        out
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// How many carets to draw: the underlined text's width in characters, clipped to the line, at least 1.
fn caret_width(line: &str, col: usize, len_bytes: usize) -> usize {
    if len_bytes == 0 {
        return 1;
    }
    let start = line.char_indices().nth(col - 1).map_or(line.len(), |(i, _)| i);
    let end = (start + len_bytes).min(line.len());
    let end = (end..=line.len()).find(|&i| line.is_char_boundary(i)).unwrap_or(line.len());
    line[start..end].chars().count().max(1)
}

/// The closest candidate to `word` by edit distance, if it is close enough to be a plausible typo.
pub(crate) fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    // Fewest edits first; Jaro-Winkler similarity breaks ties and admits longer near-misses.
    let mut best: Option<((usize, i64), &str)> = None;
    for candidate in candidates {
        let distance = strsim::levenshtein(word, candidate);
        let score = strsim::jaro_winkler(word, candidate);
        let close = distance <= (word.len().max(3) / 3).max(2);
        let key = (distance, -(score * 1000.0) as i64);
        if (score >= 0.85 || close) && best.is_none_or(|(k, _)| key < k) {
            best = Some((key, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// `did you mean `x`?` when a close candidate exists.
pub fn suggestion<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    did_you_mean(word, candidates).map(|c| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_file_line_col_source_and_caret() {
        let src = SourceFile::new("p.yaml", "tasks:\n  - id: a\n    depends_on: [lod_songs]\n");
        let pos = Pos { line: 3, col: 18, offset: None, len: 9 };
        let diags = Diagnostics::new(
            src,
            vec![Diagnostic::error(pos, "unknown dependency `lod_songs`").with_hint("did you mean `load_songs`?")],
        );
        assert_eq!(
            diags.render(),
            "p.yaml:3:18: error: unknown dependency `lod_songs`\n \
             3 |     depends_on: [lod_songs]\n   \
             |                  ^^^^^^^^^\n  \
             = hint: did you mean `load_songs`?\n\
             1 error in p.yaml\n"
        );
    }

    #[test]
    fn notes_show_the_other_place_with_its_own_line() {
        let src = SourceFile::new("p.yaml", "a:\n  path: in\nb:\n  path: in/x\n");
        let d = Diagnostic::error(Pos { line: 4, col: 9, offset: None, len: 4 }, "b writes inside a's input")
            .with_note(Pos { line: 2, col: 9, offset: None, len: 2 }, "a reads in")
            .with_hint("use another folder");
        assert_eq!(
            Diagnostics::new(src, vec![d]).render(),
            "p.yaml:4:9: error: b writes inside a's input\n \
             4 |   path: in/x\n   \
             |         ^^^^\n\
             p.yaml:2:9: note: a reads in\n \
             2 |   path: in\n   \
             |         ^^\n  \
             = hint: use another folder\n\
             1 error in p.yaml\n"
        );
    }

    #[test]
    fn suggests_close_names_only() {
        let names = ["load_songs", "load_users", "songs"];
        assert_eq!(did_you_mean("lod_songs", names), Some("load_songs"));
        assert_eq!(did_you_mean("sngs", names), Some("songs"));
        assert_eq!(did_you_mean("completely_different", names), None);
    }

    #[test]
    fn offset_maps_to_line_and_character_column() {
        let src = SourceFile::new("p.yaml", "a: 1\nb: é${x}\n");
        let offset = src.text.find("${x}").unwrap();
        let pos = src.pos_of_offset(offset, 4);
        assert_eq!((pos.line, pos.col), (2, 5));
    }
}
