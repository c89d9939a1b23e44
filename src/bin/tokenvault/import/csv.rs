//! A strict RFC 4180 reader for the SDK's file store (`sdk_tokens.txt`).
//!
//! The input is untrusted. Invariants: no input panics or loops; a record (one logical
//! line, quoted newlines included) longer than [`MAX_RECORD_BYTES`], or with more fields
//! than the caller allows, is an error before it is buffered further; every error names
//! the line it was found on. Accepted: fields separated by commas, records ended by CRLF
//! or LF (or the end of the input), quoted fields that hold commas, doubled quotes, CR
//! and LF; an empty line is skipped; a UTF-8 byte-order mark is ignored. Anything else
//! (a quote inside an unquoted field, text after a closing quote, a quoted field never
//! closed, a lone CR outside quotes, invalid UTF-8) is an error.

use std::fmt;

use zeroize::Zeroizing;

/// The longest record accepted, in bytes.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// One record: the line it starts on (1-based) and its fields.
pub struct Record {
    /// The line the record starts on.
    pub line: usize,
    /// The fields, in order; zeroized on drop (they hold secrets).
    pub fields: Vec<Zeroizing<String>>,
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

    fn record(&mut self) -> Result<Option<Record>, CsvError> {
        // Empty lines carry no record.
        while self.line_end()? {}
        if self.pos >= self.input.len() {
            return Ok(None);
        }
        let start = self.pos;
        let line = self.line;
        let too_long = |pos: usize| pos - start > MAX_RECORD_BYTES;
        let mut fields = Vec::new();
        loop {
            if fields.len() == self.max_fields {
                return Err(CsvError::TooManyFields {
                    line,
                    max: self.max_fields,
                });
            }
            let field_line = self.line;
            let mut value = Zeroizing::new(Vec::new());
            if self.peek() == Some(b'"') {
                self.pos += 1;
                loop {
                    if too_long(self.pos) {
                        return Err(CsvError::TooLong { line });
                    }
                    match self.peek() {
                        None => return Err(CsvError::Unclosed { line: field_line }),
                        Some(b'"') if self.peek_at(1) == Some(b'"') => {
                            value.push(b'"');
                            self.pos += 2;
                        }
                        Some(b'"') => {
                            self.pos += 1;
                            break;
                        }
                        Some(b) => {
                            if b == b'\n' {
                                self.line += 1;
                            }
                            value.push(b);
                            self.pos += 1;
                        }
                    }
                }
            } else {
                let from = self.pos;
                while let Some(b) = self.peek() {
                    match b {
                        b',' | b'\r' | b'\n' => break,
                        b'"' => return Err(CsvError::QuoteInUnquotedField { line: self.line }),
                        _ => self.pos += 1,
                    }
                    if too_long(self.pos) {
                        return Err(CsvError::TooLong { line });
                    }
                }
                value.extend_from_slice(self.input.get(from..self.pos).unwrap_or_default());
            }
            let text = std::str::from_utf8(&value).map_err(|_| CsvError::NotUtf8 { line: field_line })?;
            fields.push(Zeroizing::new(text.to_owned()));
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

impl Iterator for Reader<'_> {
    type Item = Result<Record, CsvError>;

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
            .map(|r| r.map(|r| (r.line, r.fields.iter().map(|f| f.to_string()).collect())))
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
        let mut long = vec![b'x'; MAX_RECORD_BYTES + 2];
        assert_eq!(parse(&long), Err(CsvError::TooLong { line: 1 }));
        long[0] = b'"';
        assert_eq!(parse(&long), Err(CsvError::TooLong { line: 1 }));
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
