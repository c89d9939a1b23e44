//! Reading the Zoho SDK's token stores: the file store's CSV and the SQL stores'
//! `oauthtoken` table in a SQLite file, told apart by content.
//!
//! Invariants: the source file is only read (SQLite is opened read-only); the whole
//! source is checked (structure, field and row caps) before anything is written, so a
//! malformed file imports nothing; rows are then read again one at a time, so memory is
//! bounded by the caps of [`crate::limits`] and never grows with the number of rows; a row
//! whose cells cannot make a token is rejected with its line (CSV) or row (SQLite) number
//! and a reason that never quotes a cell; no error message quotes a cell that could be a
//! secret.

mod csv;
mod sqlite;

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek};
use std::ops::ControlFlow;
use std::path::Path;

use tokenvault::{Field, OAuthToken};
use zeroize::{Zeroize, Zeroizing};

use crate::failure::{quoted, Failure};
use crate::limits::{grouped, MAX_CSV_BYTES, MAX_ROWS};
use crate::secret_buf::{self, ReadError, SecretBuf};

/// The first 16 bytes of every SQLite 3 database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Where a row came from, for the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// The line a CSV record starts on (the header is line 1).
    Line(usize),
    /// The position of a row in the SQLite table (1-based).
    Row(usize),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(n) => write!(f, "line {n}"),
            Location::Row(n) => write!(f, "row {n}"),
        }
    }
}

/// One row of the source: a token, or why its cells cannot make one.
pub struct Row {
    /// Where it came from.
    pub at: Location,
    /// The token (its id kept), or the reason it is rejected.
    pub token: Result<OAuthToken, String>,
}

/// A checked SDK store, ready to be read row by row.
pub struct Store {
    shown: String,
    rows: usize,
    kind: Kind,
}

enum Kind {
    /// The CSV file's bytes and the columns its header names.
    Csv { bytes: SecretBuf, columns: Vec<Field> },
    /// The SQLite file, open in a read transaction (so both passes see the same rows).
    Sqlite(sqlite::Table),
}

impl Store {
    /// How many rows the source holds.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Hands every row to `each`, in order, one at a time, until `each` breaks.
    ///
    /// # Errors
    /// The source could not be read again (its rows were checked already, so this is an
    /// I/O failure); the message names the row.
    pub fn for_each_row(&self, mut each: impl FnMut(Row) -> ControlFlow<()>) -> Result<(), Failure> {
        match &self.kind {
            Kind::Csv { bytes, columns } => csv_rows(bytes, columns, &self.shown, &mut each),
            Kind::Sqlite(table) => table.for_each_row(&self.shown, &mut each),
        }
    }
}

/// Opens the SDK store in `path` and checks all of it.
///
/// # Errors
/// The file cannot be read, is neither the SDK's CSV nor a SQLite file with an
/// `oauthtoken` table, is malformed, or is over a cap (the message names the line or row
/// and says nothing was imported).
pub fn check(path: &Path) -> Result<Store, Failure> {
    let shown = path.display().to_string();
    let unreadable = |e: std::io::Error| Failure::error(format!("cannot read {shown}: {e}"));
    let mut file = File::open(path).map_err(unreadable)?;
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.is_file() {
        return Err(Failure::error(format!("cannot import {shown}: it is not a file")));
    }
    let mut magic = [0u8; 16];
    let n = read_prefix(&mut file, &mut magic).map_err(unreadable)?;
    let is_sqlite = magic.get(..n) == Some(&SQLITE_MAGIC[..]);
    magic.zeroize();
    if is_sqlite {
        drop(file);
        return sqlite::check(path, &shown).map(|(table, rows)| Store {
            shown,
            rows,
            kind: Kind::Sqlite(table),
        });
    }
    file.rewind().map_err(unreadable)?;
    let hint = usize::try_from(meta.len()).unwrap_or(usize::MAX);
    let bytes = secret_buf::read_bounded(&mut file, MAX_CSV_BYTES, hint).map_err(|e| match e {
        ReadError::Io(e) => unreadable(e),
        ReadError::TooLarge => Failure::error(format!(
            "cannot import {shown}: a CSV file over 1 GiB is refused; split it"
        )),
    })?;
    let (columns, rows) = check_csv(bytes.as_bytes(), &shown)?;
    Ok(Store {
        shown,
        rows,
        kind: Kind::Csv { bytes, columns },
    })
}

/// Fills `buf` from `file` as far as the file goes; returns how much was read.
fn read_prefix(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while let Some(room) = buf.get_mut(n..).filter(|r| !r.is_empty()) {
        match file.read(room) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn malformed(shown: &str, e: &csv::CsvError) -> Failure {
    Failure::error(format!("cannot import {shown}: {e}; nothing was imported"))
}

/// The SDK file store's CSV: a header naming the columns, then one token per record.
/// Returns the columns and the number of records, having checked every record's shape
/// and the caps (no token is built here).
fn check_csv(bytes: &[u8], shown: &str) -> Result<(Vec<Field>, usize), Failure> {
    let mut reader = csv::Reader::new(bytes, 2 * Field::ALL.len());
    let header = match reader.next() {
        None => {
            return Err(Failure::error(format!(
                "cannot import {shown}: the file is empty, not the SDK's CSV (its header is {})",
                column_list(Source::Csv)
            )))
        }
        Some(record) => record.map_err(|e| malformed(shown, &e))?,
    };
    let names: Vec<Zeroizing<String>> = header.fields.iter().map(|f| f.text()).collect();
    let columns = header_columns(names.iter().map(|f| f.as_str()), Source::Csv, shown)?;
    reader.set_max_fields(columns.len());
    let mut rows = 0;
    for record in reader {
        let record = record.map_err(|e| malformed(shown, &e))?;
        if record.fields.len() != columns.len() {
            return Err(Failure::error(format!(
                "cannot import {shown}: line {} has {} fields where the header has {}; nothing was imported",
                record.line,
                record.fields.len(),
                columns.len()
            )));
        }
        if rows == MAX_ROWS {
            return Err(Failure::error(format!(
                "cannot import {shown}: line {} holds row {}, past the {} rows one import takes; split \
                 the file; nothing was imported",
                record.line,
                grouped(MAX_ROWS + 1),
                grouped(MAX_ROWS)
            )));
        }
        rows += 1;
    }
    Ok((columns, rows))
}

/// The second pass over a checked CSV: one token at a time.
fn csv_rows(
    bytes: &SecretBuf,
    columns: &[Field],
    shown: &str,
    each: &mut dyn FnMut(Row) -> ControlFlow<()>,
) -> Result<(), Failure> {
    let mut reader = csv::Reader::new(bytes.as_bytes(), 2 * Field::ALL.len());
    // The header, checked already.
    let _ = reader.next();
    reader.set_max_fields(columns.len());
    for record in reader {
        // The bytes are those checked: an error here cannot happen, but is not ignored.
        let record = record.map_err(|e| Failure::error(format!("cannot read {shown} again: {e}")))?;
        let row = Row {
            at: Location::Line(record.line),
            token: csv_token(columns, &record.fields),
        };
        if each(row).is_break() {
            break;
        }
    }
    Ok(())
}

/// Which store a header comes from: the two spell the redirect column differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Csv,
    Sqlite,
}

/// The SDK's stores persist every token field, each in the column of its name, but for
/// one: the file store's CSV calls the redirect URL `redirect_uri`.
const CSV_REDIRECT: &str = "redirect_uri";

/// The name of the column that holds `field` in `source`.
fn column_name(field: Field, source: Source) -> &'static str {
    match (field, source) {
        (Field::RedirectUrl, Source::Csv) => CSV_REDIRECT,
        _ => field.name(),
    }
}

/// The field a header's column names (either spelling of the redirect column is accepted).
fn named(name: &str) -> Option<Field> {
    if name == CSV_REDIRECT {
        return Some(Field::RedirectUrl);
    }
    Field::from_name(name)
}

/// Every column, in the SDK's order (the token's).
fn column_list(source: Source) -> String {
    Field::ALL.map(|f| column_name(f, source)).join(", ")
}

/// Maps a header to the fields its columns hold: every SDK column exactly once, nothing
/// else.
fn header_columns<'a>(
    names: impl Iterator<Item = &'a str>,
    source: Source,
    shown: &str,
) -> Result<Vec<Field>, Failure> {
    let what = match source {
        Source::Csv => "the CSV header",
        Source::Sqlite => "the oauthtoken table",
    };
    let names: Vec<&str> = names.collect();
    let mut columns = Vec::with_capacity(names.len());
    let mut unknown = None;
    for name in &names {
        match named(name) {
            Some(column) if columns.contains(&column) => {
                return Err(Failure::error(format!(
                    "cannot import {shown}: {what} names the column {} twice",
                    quoted(column_name(column, source))
                )))
            }
            Some(column) => columns.push(column),
            None => {
                unknown.get_or_insert(*name);
            }
        }
    }
    if let Some(name) = unknown {
        if source == Source::Csv && columns.is_empty() {
            return Err(Failure::error(format!(
                "cannot import {shown}: its first line is not the SDK's CSV header ({})",
                column_list(source)
            )));
        }
        // A header cell that does not look like a column name may be a secret (a file
        // without its header): do not repeat it.
        let looks_like_a_name = name.len() <= 32
            && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let which = if looks_like_a_name {
            format!("an unknown column {}", quoted(name))
        } else {
            "a column that is not a column name".to_owned()
        };
        return Err(Failure::error(format!(
            "cannot import {shown}: {what} has {which}; the SDK's columns are {}",
            column_list(source)
        )));
    }
    if let Some(missing) = Field::ALL.into_iter().find(|c| !columns.contains(c)) {
        return Err(Failure::error(format!(
            "cannot import {shown}: {what} has no {} column",
            quoted(column_name(missing, source))
        )));
    }
    Ok(columns)
}

/// A CSV row's token: its text copied once, from the file's bytes into the token.
fn csv_token(columns: &[Field], fields: &[csv::Field<'_>]) -> Result<OAuthToken, String> {
    let mut expiry = None;
    for (column, value) in columns.iter().zip(fields) {
        if *column == Field::ExpiryTime && !value.is_empty() {
            // A doubled quote is not part of a number.
            let text = value.plain().unwrap_or("\"");
            expiry = Some(parse_expiry(text)?);
        }
    }
    let texts = columns
        .iter()
        .zip(fields)
        .filter(|(column, _)| **column != Field::ExpiryTime)
        .map(|(column, value)| (*column, value.pieces()));
    let mut token = OAuthToken::from_text_pieces(texts).map_err(|e| e.to_string())?;
    token.set_expiry_time(expiry);
    Ok(token)
}

/// The SDK's expiry: milliseconds since the epoch as a decimal string.
fn parse_expiry(text: &str) -> Result<i64, String> {
    text.trim()
        .parse::<i64>()
        .map_err(|_| "expiry_time is not a whole number of milliseconds".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(line: &str) -> Result<Vec<Field>, String> {
        header_columns(line.split(','), Source::Csv, "f.csv").map_err(|f| f.to_string())
    }

    #[test]
    fn the_sdk_header_maps_in_any_order() {
        let sdk = "id,user_name,client_id,client_secret,refresh_token,access_token,grant_token,expiry_time,redirect_uri,api_domain";
        assert_eq!(header(sdk).unwrap(), Field::ALL.to_vec());
        let shuffled = "api_domain,id,user_name,client_id,client_secret,refresh_token,access_token,grant_token,expiry_time,redirect_url";
        assert_eq!(header(shuffled).unwrap().first(), Some(&Field::ApiDomain));
    }

    #[test]
    fn the_csv_calls_the_redirect_column_redirect_uri_and_sqlite_redirect_url() {
        assert_eq!(
            column_list(Source::Csv),
            "id, user_name, client_id, client_secret, refresh_token, access_token, grant_token, \
             expiry_time, redirect_uri, api_domain"
        );
        assert_eq!(
            column_list(Source::Sqlite),
            column_list(Source::Csv).replace("redirect_uri", "redirect_url")
        );
    }

    #[test]
    fn a_bad_header_is_explained() {
        let e = header("id,user_name,colour").unwrap_err();
        assert!(e.contains("unknown column \"colour\""), "{e}");
        let e = header("id,user_name").unwrap_err();
        assert!(e.contains("no \"client_id\" column"), "{e}");
        let e = header("id,id").unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let e = header("1,alice@example.com,1000.X,0123abcdef").unwrap_err();
        assert!(e.contains("not the SDK's CSV header"), "{e}");
        let e = header("id,1000.ab3d0c9f.secret").unwrap_err();
        assert!(!e.contains("secret\""), "{e}");
    }

    #[test]
    fn expiry_is_a_decimal_integer() {
        assert_eq!(parse_expiry("1764000000000"), Ok(1_764_000_000_000));
        assert_eq!(parse_expiry(" -5 "), Ok(-5));
        assert!(parse_expiry("soon").is_err());
        assert!(parse_expiry("1.5").is_err());
        assert!(parse_expiry("99999999999999999999").is_err());
    }
}
