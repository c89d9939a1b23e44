//! A strict RFC 4180 reader for the SDK's file store (`sdk_tokens.txt`).
//!
//! The input is untrusted. Invariants: no input panics or loops; a field longer than
//! [`MAX_FIELD_BYTES`] (after unquoting), a record (one logical line, quoted newlines
//! included) longer than [`MAX_RECORD_BYTES`], or one with more fields than the caller
//! allows, is an error before it is buffered further; every error names the line it was
//! found on; a field is read in place, never copied (its text is the input's bytes, less
//! the doubled quotes: see [`Field::pieces`]), so whoever builds a token from it copies a
//! secret once, into the token. Accepted: fields separated by commas, records ended by CRLF
//! or LF (or the end of the input), quoted fields that hold commas, doubled quotes, CR
//! and LF; an empty line is skipped; a UTF-8 byte-order mark is ignored. Anything else
//! (a quote inside an unquoted field, text after a closing quote, a quoted field never
//! closed, a lone CR outside quotes, invalid UTF-8) is an error.

use std::fmt;

use zeroize::Zeroizing;

use crate::limits::{MAX_FIELD_BYTES, MAX_FIELD_TEXT, MAX_RECORD_BYTES};

/// One record: the line it starts on (1-based) and its fields.
pub struct Record<'a> {
    /// The line the record starts on.
    pub line: usize,
    /// The fields, in order.
    pub fields: Vec<Field<'a>>,
}

/// One field, in place in the input: its bytes between the quotes (if quoted), checked
/// UTF-8.
#[derive(Clone, Copy)]
pub struct Field<'a> {
    raw: &'a str,
    /// Quoted, with at least one doubled quote in `raw` (each stands for one quote).
    escaped: bool,
}

impl<'a> Field<'a> {
    /// The field's text in pieces, end to end: `raw` split after each doubled quote's
    /// first `"` (its second left out). No copy.
    pub fn pieces(self) -> impl Iterator<Item = &'a str> + Clone {
        let escaped = self.escaped;
        let mut rest = Some(self.raw);
        std::iter::from_fn(move || {
            let text = rest?;
            match text.find("\"\"").filter(|_| escaped) {
                Some(at) => {
                    rest = text.get(at + 2..);
                    text.get(..=at)
                }
                None => {
                    rest = None;
                    Some(text)
                }
            }
        })
    }

    /// The field's text, if it is the input's bytes as they are (no doubled quote).
    pub fn plain(self) -> Option<&'a str> {
        (!self.escaped).then_some(self.raw)
    }

    /// Whether the field's text is empty.
    pub fn is_empty(self) -> bool {
        self.raw.is_empty()
    }

    /// The field's text, copied (zeroized on drop).
    pub fn text(self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(String::with_capacity(self.raw.len()));
        self.pieces().for_each(|p| text.push_str(p));
        text
    }
}

/// Why the input is not CSV as the SDK writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsvError {
    /// A quoted field is still open at the end of the input.
    Unclosed {
        /// The line the field starts on.
        line: usize,
    },
    /// A `"` inside a field that does not start with one.
    QuoteInUnquotedField {
        /// The line of the quote.
        line: usize,
    },
    /// Something other than a comma or a line end after a closing quote.
    TextAfterClosingQuote {
        /// The line of the text.
        line: usize,
    },
    /// A carriage return not followed by a line feed, outside quotes.
    StrayCarriageReturn {
        /// The line of the carriage return.
        line: usize,
    },
    /// A record longer than [`MAX_RECORD_BYTES`].
    TooLong {
        /// The line the record starts on.
        line: usize,
    },
    /// A field longer than [`MAX_FIELD_BYTES`].
    FieldTooLong {
        /// The line the field starts on.
        line: usize,
    },
    /// A record with more fields than allowed.
    TooManyFields {
        /// The line the record starts on.
        line: usize,
        /// The number allowed.
        max: usize,
    },
    /// A field that is not UTF-8.
    NotUtf8 {
        /// The line the field starts on.
        line: usize,
    },
}

impl fmt::Display for CsvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CsvError::Unclosed { line } => write!(f, "line {line}: a quoted field is never closed"),
            CsvError::QuoteInUnquotedField { line } => {
                write!(f, "line {line}: a quote inside an unquoted field")
            }
            CsvError::TextAfterClosingQuote { line } => {
                write!(f, "line {line}: text after the closing quote of a field")
            }
            CsvError::StrayCarriageReturn { line } => {
                write!(f, "line {line}: a carriage return that does not end the line")
            }
            CsvError::TooLong { line } => write!(f, "line {line}: the record is longer than 16 MiB"),
            CsvError::FieldTooLong { line } => {
                write!(f, "line {line}: a field is longer than {MAX_FIELD_TEXT}")
            }
            CsvError::TooManyFields { line, max } => {
                write!(f, "line {line}: more than {max} fields")
            }
            CsvError::NotUtf8 { line } => write!(f, "line {line}: not valid UTF-8"),
        }
    }
}

/// Reads records from a byte slice.
pub struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
    line: usize,
    max_fields: usize,
    failed: bool,
}

impl<'a> Reader<'a> {
    /// A reader over `input` allowing at most `max_fields` fields per record.
    pub fn new(input: &'a [u8], max_fields: usize) -> Self {
        let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
        Reader {
            input,
            pos: 0,
            line: 1,
            max_fields,
            failed: false,
        }
    }

    /// Changes the field limit (after the header has told how many there are).
    pub fn set_max_fields(&mut self, max_fields: usize) {
        self.max_fields = max_fields;
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<u8> {
        self.pos
            .checked_add(ahead)
            .and_then(|i| self.input.get(i))
            .copied()
    }

    /// Consumes a line end at the current position, if there is one.
    fn line_end(&mut self) -> Result<bool, CsvError> {
        match (self.peek(), self.peek_at(1)) {
            (Some(b'\n'), _) => {
                self.pos += 1;
            }
            (Some(b'\r'), Some(b'\n')) => {
                self.pos += 2;
            }
            (Some(b'\r'), _) => return Err(CsvError::StrayCarriageReturn { line: self.line }),
            _ => return Ok(false),
        }
        self.line += 1;
        Ok(true)
    }

    fn record(&mut self) -> Result<Option<Record<'a>>, CsvError> {
        // Empty lines carry no record.
        while self.line_end()? {}
        if self.pos >= self.input.len() {
            return Ok(None);
        }
        let start = self.pos;
        let line = self.line;
        let mut fields = Vec::with_capacity(self.max_fields);
        loop {
            if fields.len() == self.max_fields {
                return Err(CsvError::TooManyFields {
                    line,
                    max: self.max_fields,
                });
            }
            let text = if self.peek() == Some(b'"') {
                self.quoted_field(start, line)?
            } else {
                self.unquoted_field(start, line)?
            };
            fields.push(text);
            match self.peek() {
                Some(b',') => self.pos += 1,
                None => return Ok(Some(Record { line, fields })),
                Some(_) => {
                    if self.line_end()? {
                        return Ok(Some(Record { line, fields }));
                    }
                    return Err(CsvError::TextAfterClosingQuote { line: self.line });
                }
            }
        }
    }
}

impl<'a> Reader<'a> {
    /// A quoted field from its opening quote.
    fn quoted_field(&mut self, start: usize, line: usize) -> Result<Field<'a>, CsvError> {
        let field_line = self.line;
        let body = self.pos + 1;
        let mut end = body;
        let mut unquoted = 0usize;
        let mut newlines = 0;
        loop {
            if end - start > MAX_RECORD_BYTES {
                return Err(CsvError::TooLong { line });
            }
            if unquoted > MAX_FIELD_BYTES {
                return Err(CsvError::FieldTooLong { line: field_line });
            }
            match (self.input.get(end), self.input.get(end + 1)) {
                (None, _) => return Err(CsvError::Unclosed { line: field_line }),
                (Some(b'"'), Some(b'"')) => end += 2,
                (Some(b'"'), _) => break,
                (Some(b), _) => {
                    if *b == b'\n' {
                        newlines += 1;
                    }
                    end += 1;
                }
            }
            unquoted += 1;
        }
        let input: &'a [u8] = self.input;
        let raw = input.get(body..end).unwrap_or_default();
        let raw = std::str::from_utf8(raw).map_err(|_| CsvError::NotUtf8 { line: field_line })?;
        self.line += newlines;
        self.pos = end + 1;
        Ok(Field {
            raw,
            escaped: unquoted != raw.len(),
        })
    }

    /// An unquoted field: up to a comma, a line end or the end of the input.
    fn unquoted_field(&mut self, start: usize, line: usize) -> Result<Field<'a>, CsvError> {
        let from = self.pos;
        while let Some(b) = self.peek() {
            match b {
                b',' | b'\r' | b'\n' => break,
                b'"' => return Err(CsvError::QuoteInUnquotedField { line: self.line }),
                _ => self.pos += 1,
            }
            if self.pos - start > MAX_RECORD_BYTES {
                return Err(CsvError::TooLong { line });
            }
            if self.pos - from > MAX_FIELD_BYTES {
                return Err(CsvError::FieldTooLong { line: self.line });
            }
        }
        let input: &'a [u8] = self.input;
        let raw = input.get(from..self.pos).unwrap_or_default();
        let raw = std::str::from_utf8(raw).map_err(|_| CsvError::NotUtf8 { line: self.line })?;
        Ok(Field { raw, escaped: false })
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<Record<'a>, CsvError>;

    /// The next record; after an error, nothing more.
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let next = self.record().transpose();
        if matches!(next, Some(Err(_))) {
            self.failed = true;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &[u8]) -> Result<Vec<(usize, Vec<String>)>, CsvError> {
        Reader::new(input, 16)
            .map(|r| r.map(|r| (r.line, r.fields.iter().map(|f| f.text().to_string()).collect())))
            .collect()
    }

    fn row(line: usize, fields: &[&str]) -> (usize, Vec<String>) {
        (line, fields.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn reads_what_pythons_csv_writer_writes() {
        let input = b"id,user_name\r\n1,\"a,b\"\r\n2,\"say \"\"hi\"\"\"\r\n3,\"two\r\nlines\"\r\n4,\r\n";
        assert_eq!(
            parse(input).unwrap(),
            vec![
                row(1, &["id", "user_name"]),
                row(2, &["1", "a,b"]),
                row(3, &["2", "say \"hi\""]),
                row(4, &["3", "two\r\nlines"]),
                row(6, &["4", ""]),
            ]
        );
    }

    #[test]
    fn accepts_lf_no_final_newline_blank_lines_and_a_bom() {
        let input = b"\xEF\xBB\xBFa,b\n\n1,2\n\r\n3,\"\"";
        assert_eq!(
            parse(input).unwrap(),
            vec![row(1, &["a", "b"]), row(3, &["1", "2"]), row(5, &["3", ""])]
        );
        assert_eq!(parse(b"").unwrap(), vec![]);
    }

    #[test]
    fn rejects_malformed_quoting_with_its_line() {
        assert_eq!(parse(b"a\n\"open"), Err(CsvError::Unclosed { line: 2 }));
        assert_eq!(parse(b"a\nb\"c"), Err(CsvError::QuoteInUnquotedField { line: 2 }));
        assert_eq!(
            parse(b"a\n\"b\"c"),
            Err(CsvError::TextAfterClosingQuote { line: 2 })
        );
        assert_eq!(parse(b"a\rb"), Err(CsvError::StrayCarriageReturn { line: 1 }));
        assert_eq!(parse(b"a\n\xff"), Err(CsvError::NotUtf8 { line: 2 }));
        assert_eq!(
            parse(b"1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17"),
            Err(CsvError::TooManyFields { line: 1, max: 16 })
        );
    }

    #[test]
    fn rejects_a_record_over_the_limit() {
        // Four fields at the field cap and one more byte: the record is over its cap.
        let field = vec![b'x'; MAX_FIELD_BYTES];
        let mut long = [&field[..], &field[..], &field[..], &field[..]].join(&b","[..]);
        long.extend_from_slice(b",xxxx");
        assert_eq!(parse(&long), Err(CsvError::TooLong { line: 1 }));
        let quoted: Vec<u8> = [&b"\""[..], &field[..], &b"\""[..]].concat();
        let mut long = [&quoted[..], &quoted[..], &quoted[..], &quoted[..]].join(&b","[..]);
        long.extend_from_slice(b",\"");
        assert_eq!(parse(&long), Err(CsvError::TooLong { line: 1 }));
    }

    #[test]
    fn a_field_may_reach_the_field_cap_but_not_pass_it() {
        let at_cap = vec![b'x'; MAX_FIELD_BYTES];
        let fields = parse(&[&b"a,"[..], &at_cap].concat()).unwrap();
        assert_eq!(fields[0].1[1].len(), MAX_FIELD_BYTES);
        let over = [&b"a\n1,"[..], &at_cap, b"x"].concat();
        assert_eq!(parse(&over), Err(CsvError::FieldTooLong { line: 2 }));
        // Quoted: the cap counts the field's text, a doubled quote as one byte.
        let mut quoted = vec![b'"'; 2 * 1024];
        quoted.resize(MAX_FIELD_BYTES + 1024, b'x');
        let at_cap = [&b"\""[..], &quoted, b"\""].concat();
        let fields = parse(&at_cap).unwrap();
        assert_eq!(fields[0].1[0].len(), MAX_FIELD_BYTES);
        assert!(fields[0].1[0].starts_with("\"\"") && fields[0].1[0].ends_with("xx"));
        let over = [&b"a\n\"\n"[..], &quoted, b"x\""].concat();
        assert_eq!(parse(&over), Err(CsvError::FieldTooLong { line: 2 }));
    }

    /// A field is read in place: its pieces are slices of the input, a doubled quote's
    /// second `"` left out; only a field without one is `plain`.
    #[test]
    fn fields_are_pieces_of_the_input() {
        let input = b"ab,\"c,d\",\"x\"\"y\"\"\"\"z\",\"\"\"\",\"\"";
        let record = Reader::new(input, 8).next().unwrap().unwrap();
        let within = |p: &str| {
            let range = input.as_ptr_range();
            p.is_empty() || range.contains(&p.as_ptr())
        };
        let seen: Vec<(Vec<&str>, Option<&str>)> = record
            .fields
            .iter()
            .map(|f| (f.pieces().collect(), f.plain()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (vec!["ab"], Some("ab")),
                (vec!["c,d"], Some("c,d")),
                (vec!["x\"", "y\"", "\"", "z"], None),
                (vec!["\"", ""], None),
                (vec![""], Some("")),
            ]
        );
        assert!(record.fields.iter().flat_map(|f| f.pieces()).all(within));
        assert_eq!(&*record.fields[2].text(), "x\"y\"\"z");
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        // A cheap deterministic sweep over short inputs from a small alphabet.
        let alphabet = [b'a', b',', b'"', b'\r', b'\n', 0xff];
        for n in 0..6u32 {
            for mut code in 0..alphabet.len().pow(n) {
                let mut input = Vec::new();
                for _ in 0..n {
                    input.push(alphabet[code % alphabet.len()]);
                    code /= alphabet.len();
                }
                let _ = parse(&input);
            }
        }
    }
}
