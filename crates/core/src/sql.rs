//! Static reading of task SQL with `sqlparser`: syntax errors located in the pipeline file, and the
//! tables a query reads (so a transform's inputs are known before it runs, and a typo in a table
//! name is caught by `validate`). Execution belongs to the engines.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use sqlparser::ast::{ObjectName, Query, Statement, Visit, Visitor};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

use crate::decode::Located;
use crate::diagnostic::{Pos, SourceFile};

/// A SQL problem, positioned inside the SQL text (1-based; 0 when unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    /// What the parser says.
    pub message: String,
    /// The 1-based line in the SQL text.
    pub line: u32,
    /// The 1-based column in that line.
    pub column: u32,
}

/// The tables a single SELECT query reads, in first-use order, excluding its own CTE names.
pub fn referenced_tables(sql: &str) -> Result<Vec<String>, SqlError> {
    let statements = Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| parse_error(&e.to_string()))?;
    let query = match statements.as_slice() {
        [Statement::Query(query)] => query,
        [] => {
            return Err(SqlError { message: "the query is empty".into(), line: 0, column: 0 });
        }
        [_] => {
            return Err(SqlError {
                message: "expected a single SELECT query (a transform's result is the query's rows)".into(),
                line: 1,
                column: 1,
            });
        }
        _ => {
            return Err(SqlError {
                message: format!("expected one query, found {} statements", statements.len()),
                line: 0,
                column: 0,
            });
        }
    };
    let mut collector = Tables::default();
    let _ = query.visit(&mut collector);
    Ok(collector.tables.into_iter().filter(|t| !collector.ctes.contains(t)).collect())
}

#[derive(Default)]
struct Tables {
    tables: Vec<String>,
    ctes: BTreeSet<String>,
}

impl Visitor for Tables {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(cte.alias.name.value.clone());
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        if let Some(ident) = relation.0.last().and_then(|p| p.as_ident())
            && !self.tables.contains(&ident.value)
        {
            self.tables.push(ident.value.clone());
        }
        ControlFlow::Continue(())
    }
}

/// Splits sqlparser's "... at Line: 2, Column: 10" into message and position.
fn parse_error(text: &str) -> SqlError {
    let text = text.strip_prefix("sql parser error: ").unwrap_or(text);
    if let Some(i) = text.rfind(" at Line: ") {
        let tail = &text[i + " at Line: ".len()..];
        let mut parts = tail.split(", Column: ");
        let line = parts.next().and_then(|l| l.trim().parse().ok()).unwrap_or(0);
        let column = parts.next().and_then(|c| c.trim().parse().ok()).unwrap_or(0);
        return SqlError { message: text[..i].to_string(), line, column };
    }
    SqlError { message: text.to_string(), line: 0, column: 0 }
}

/// Maps a (line, column) inside a SQL string to its place in the pipeline file. The SQL lines are
/// found verbatim in the source after the scalar's start (true for block scalars `|`, and for
/// single-line scalars); otherwise the scalar's own position is used.
pub(crate) fn locate(source: &SourceFile, sql: &Located<String>, line: u32, column: u32) -> Pos {
    if line == 0 {
        return sql.pos;
    }
    let Some(start) = sql.pos.offset else {
        return sql.pos;
    };
    let mut cursor = start;
    let mut found = None;
    for (n, text) in sql.value.lines().enumerate().take(line as usize) {
        let Some(rel) = source.text.get(cursor..).and_then(|rest| rest.find(text)) else {
            return sql.pos;
        };
        found = Some((cursor + rel, text));
        cursor += rel + text.len();
        if n + 1 == line as usize {
            break;
        }
    }
    let Some((line_start, text)) = found else {
        return sql.pos;
    };
    let col_bytes: usize = text.chars().take(column.saturating_sub(1) as usize).map(char::len_utf8).sum();
    let token_len = text[col_bytes.min(text.len())..]
        .find(|c: char| c.is_whitespace() || c == ',' || c == ')')
        .unwrap_or(text.len() - col_bytes.min(text.len()));
    source.pos_of_offset(line_start + col_bytes, token_len)
}

/// The position of the first whole-word occurrence of `word` in a SQL scalar.
pub(crate) fn locate_word(source: &SourceFile, sql: &Located<String>, word: &str) -> Pos {
    for (n, line) in sql.value.lines().enumerate() {
        let mut from = 0;
        while let Some(i) = line[from..].find(word) {
            let at = from + i;
            let before = line[..at].chars().next_back();
            let after = line[at + word.len()..].chars().next();
            let boundary = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
            if boundary(before) && boundary(after) {
                let column = line[..at].chars().count() as u32 + 1;
                let pos = locate(source, sql, n as u32 + 1, column);
                return Pos { len: word.len(), ..pos };
            }
            from = at + word.len();
        }
    }
    sql.pos
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tables_but_not_ctes() {
        let sql = "WITH m AS (SELECT * FROM events e JOIN songs s ON e.song = s.title)\n\
                   SELECT * FROM m LEFT JOIN artists a ON m.artist_id = a.artist_id";
        assert_eq!(referenced_tables(sql).unwrap(), vec!["events", "songs", "artists"]);
    }

    #[test]
    fn tables_in_subqueries_count() {
        let sql = "SELECT * FROM a WHERE x IN (SELECT x FROM b)";
        assert_eq!(referenced_tables(sql).unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let err = referenced_tables("SELECT a\nFORM t").unwrap_err();
        assert_eq!((err.line, err.column), (2, 6));
        assert!(err.message.contains("found: t"), "{}", err.message);
    }

    #[test]
    fn statements_other_than_a_query_are_rejected() {
        let err = referenced_tables("DROP TABLE songs").unwrap_err();
        assert!(err.message.contains("single SELECT"));
    }

    #[test]
    fn positions_map_into_a_block_scalar() {
        let text = "sql: |\n  SELECT a\n  FROM tabel\n";
        let source = SourceFile::new("t.yaml", text);
        let sql = Located::new("SELECT a\nFROM tabel\n".to_string(), Pos { line: 1, col: 6, offset: Some(5), len: 1 });
        let pos = locate_word(&source, &sql, "tabel");
        assert_eq!((pos.line, pos.col, pos.len), (3, 8, 5));
    }
}
