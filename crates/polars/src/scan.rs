//! The fast path of record parsing: one flat JSON object whose values are strings, numbers,
//! `true`, `false` or `null`, as log lines are. It checks the JSON grammar as it goes (as
//! serde_json does: a `\u` escape needs four hex digits, whether they make a valid character is
//! decided when a value is decoded) and notes where the wanted fields' values are; it gives up on
//! anything else (nested values, escaped keys, any error), and the full parser in [`crate::json`]
//! decides that record with its precise messages. On every record it accepts, it finds the same values the full
//! parser does (tested against it).

/// Where one value is in the record: `start..end`, quotes included for strings.
pub(crate) type Span = (u32, u32);

/// Scans `raw` (valid UTF-8, trimmed) as one flat object. `wanted` maps a key to the slots its value
/// goes into. Returns false, with `slots` in an unspecified state, when the full parser must
/// decide.
pub(crate) fn flat_object<'k>(
    raw: &[u8],
    mut wanted: impl FnMut(&[u8]) -> Option<&'k [usize]>,
    slots: &mut [Option<Span>],
) -> bool {
    if raw.len() >= u32::MAX as usize {
        return false;
    }
    let mut s = Scanner { b: raw, i: 0 };
    s.ws();
    if !s.eat(b'{') {
        return false;
    }
    s.ws();
    if s.eat(b'}') {
        s.ws();
        return s.i == raw.len();
    }
    loop {
        let Some((key_start, key_end)) = s.key() else { return false };
        s.ws();
        if !s.eat(b':') {
            return false;
        }
        s.ws();
        let start = s.i;
        if !s.value() {
            return false;
        }
        if let Some(cols) = wanted(&raw[key_start..key_end]) {
            for &c in cols {
                slots[c] = Some((start as u32, s.i as u32));
            }
        }
        s.ws();
        match s.next() {
            Some(b',') => s.ws(),
            Some(b'}') => break,
            _ => return false,
        }
    }
    s.ws();
    s.i == raw.len()
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    #[inline]
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// JSON whitespace, exactly as serde_json reads it.
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// A key without escapes: the span of its text, quotes excluded.
    fn key(&mut self) -> Option<(usize, usize)> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.i;
        loop {
            match self.next()? {
                b'"' => return Some((start, self.i - 1)),
                b'\\' => return None,
                c if c < 0x20 => return None,
                _ => {}
            }
        }
    }

    fn value(&mut self) -> bool {
        match self.peek() {
            Some(b'"') => {
                self.i += 1;
                self.string_rest()
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            _ => false,
        }
    }

    /// The rest of a string after its opening quote.
    fn string_rest(&mut self) -> bool {
        loop {
            let rest = &self.b[self.i..];
            let Some(stop) = rest.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20) else {
                return false;
            };
            self.i += stop + 1;
            match rest[stop] {
                b'"' => return true,
                b'\\' => match self.next() {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
                    Some(b'u') => {
                        let hex = self.b.get(self.i..self.i + 4);
                        if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                            return false;
                        }
                        self.i += 4;
                    }
                    _ => return false,
                },
                _ => return false,
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            true
        } else {
            false
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> bool {
        self.eat(b'-');
        match self.next() {
            Some(b'0') => {}
            Some(b'1'..=b'9') => self.digits(),
            _ => return false,
        }
        if self.eat(b'.') {
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return false;
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return false;
            }
            self.digits();
        }
        true
    }

    #[inline]
    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(raw: &str) -> Option<Vec<Option<&str>>> {
        let keys = ["a", "b"];
        let cols: [&[usize]; 2] = [&[0], &[1]];
        let mut slots = vec![None; 2];
        let wanted = |k: &[u8]| keys.iter().position(|w| w.as_bytes() == k).map(|i| cols[i]);
        flat_object(raw.as_bytes(), wanted, &mut slots)
            .then(|| slots.iter().map(|s| s.map(|(a, b)| &raw[a as usize..b as usize])).collect())
    }

    #[test]
    fn finds_the_values_of_wanted_keys_in_a_flat_object() {
        assert_eq!(
            scan(r#"{"a": "x\"y\u00e9\ud800", "skip": -1.5e+3, "b": null, "c": true}"#),
            Some(vec![Some(r#""x\"y\u00e9\ud800""#), Some("null")])
        );
        assert_eq!(scan("{}"), Some(vec![None, None]));
        assert_eq!(scan(r#" { "b" : 0 , "a":false } "#), Some(vec![Some("false"), Some("0")]));
    }

    #[test]
    fn leaves_everything_else_to_the_full_parser() {
        for raw in [
            "",
            "[]",
            r#"{"a": [1]}"#,
            r#"{"a": {"b": 1}}"#,
            r#"{"a": "\u00g9"}"#,
            r#"{"a": "\u00e"}"#,
            r#"{"a\"": 1}"#,
            r#"{"a": 01}"#,
            r#"{"a": 1.}"#,
            r#"{"a": -}"#,
            r#"{"a": 1e}"#,
            r#"{"a": tru}"#,
            r#"{"a": "x"#,
            "{\"a\": \"x\ty\"}",
            r#"{"a": 1,}"#,
            r#"{"a": 1} x"#,
            r#"{"a" 1}"#,
            r#"{"a": 1 "b": 2}"#,
            r#"{"a": "\q"}"#,
            "{",
        ] {
            assert_eq!(scan(raw), None, "{raw}");
        }
    }
}
