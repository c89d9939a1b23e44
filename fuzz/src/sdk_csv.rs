//! The SDK file store's CSV, written (the command line only reads it) and scanned for the
//! line each record starts on: the oracles of the importer targets.
//!
//! The writer writes as the SDK does: a header naming the ten columns, then one record per
//! token, an empty cell for an absent field, a field quoted (quotes doubled) only when it
//! holds a comma, a quote, a carriage return or a line feed.

use tokenvault::OAuthToken;

/// The SDK's columns, in its order, as its CSV header names them.
pub const HEADER: [&str; 10] = [
    "id",
    "user_name",
    "client_id",
    "client_secret",
    "refresh_token",
    "access_token",
    "grant_token",
    "expiry_time",
    "redirect_uri",
    "api_domain",
];

/// A token's cells in the SDK's column order (absent fields are `None`).
pub fn cells(token: &OAuthToken) -> [Option<String>; 10] {
    let text = |v: Option<&str>| v.map(str::to_owned);
    [
        text(token.id()),
        text(token.user_name()),
        text(token.client_id()),
        text(token.client_secret()),
        text(token.refresh_token()),
        text(token.access_token()),
        text(token.grant_token()),
        token.expiry_time().map(|ms| ms.to_string()),
        text(token.redirect_url()),
        text(token.api_domain()),
    ]
}

/// Appends one field, quoted if it must be.
pub fn write_field(out: &mut Vec<u8>, field: &str) {
    if field.contains([',', '"', '\r', '\n']) {
        out.push(b'"');
        out.extend_from_slice(field.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(field.as_bytes());
    }
}

/// Appends one record: the fields, comma-separated, then `eol`.
pub fn write_record<'a>(out: &mut Vec<u8>, fields: impl IntoIterator<Item = &'a str>, eol: &str) {
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_field(out, field);
    }
    out.extend_from_slice(eol.as_bytes());
}

/// Appends a token as a record in the SDK's column order, ended by CRLF.
pub fn write_token(out: &mut Vec<u8>, token: &OAuthToken) {
    let cells = cells(token);
    write_record(out, cells.iter().map(|c| c.as_deref().unwrap_or("")), "\r\n");
}

/// The header line, ended by CRLF.
pub fn header() -> Vec<u8> {
    let mut out = Vec::new();
    write_record(&mut out, HEADER, "\r\n");
    out
}

/// The whole file for `tokens`.
pub fn export(tokens: &[OAuthToken]) -> Vec<u8> {
    let mut out = header();
    for token in tokens {
        write_token(&mut out, token);
    }
    out
}

/// The line each record of `input` starts on (the header's first), for input the
/// importer's reader accepted: a UTF-8 byte-order mark is skipped, so are empty lines
/// between records, and a record ends at a line feed outside quotes (in accepted input a
/// quote outside a field's text opens or closes it, and a doubled quote closes and reopens).
pub fn record_lines(input: &[u8]) -> Vec<usize> {
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let mut lines = Vec::new();
    let mut line = 1;
    let mut in_quotes = false;
    let mut between = true;
    for &b in input {
        if between {
            match b {
                b'\n' => {
                    line += 1;
                    continue;
                }
                b'\r' => continue,
                _ => {
                    lines.push(line);
                    between = false;
                }
            }
        }
        match b {
            b'"' => in_quotes = !in_quotes,
            b'\n' => {
                line += 1;
                between = !in_quotes;
            }
            _ => {}
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_only_when_they_must_be() {
        let mut out = Vec::new();
        write_record(&mut out, ["a", "b,c", "say \"hi\"", "two\r\nlines", ""], "\n");
        assert_eq!(out, b"a,\"b,c\",\"say \"\"hi\"\"\",\"two\r\nlines\",\n");
    }

    #[test]
    fn record_lines_skips_empty_lines_and_counts_quoted_ones() {
        let input = b"\xEF\xBB\xBFid,x\r\n\r\n\n1,\"a\nb\"\r\n2,\"\"\"\"\n3,";
        assert_eq!(record_lines(input), [1, 4, 6, 7]);
        assert_eq!(record_lines(b""), Vec::<usize>::new());
    }
}
