//! The SQL stores' `oauthtoken` table, read from a SQLite file opened read-only.
//!
//! The file is untrusted: its schema as much as its rows. Invariants: the file is never
//! written (read-only open, SELECTs only); the connection does not trust the schema
//! (`trusted_schema` off, the defensive flag on) and SQLite refuses any value longer
//! than [`MAX_FIELD_BYTES`] before allocating it; `oauthtoken` must be a plain table
//! without generated columns (a view, a virtual table or a computed column could produce
//! values of any size or cost), and at most [`MAX_ROWS`] rows; both passes over the rows
//! run in one read transaction, so the rows imported are the rows checked. Values are
//! taken as SQLite stores them (the seed schema says varchar, but SQLite keeps whatever
//! was inserted): text, or an integer for any column, or a whole real number for
//! `expiry_time`; anything else rejects the row without quoting the value.

use std::borrow::Cow;
use std::ops::ControlFlow;
use std::path::Path;

use rusqlite::config::DbConfig;
use rusqlite::limits::Limit;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokenvault::{Field, OAuthToken};
use zeroize::Zeroize;

use super::{column_list, column_name, header_columns, parse_expiry, Location, Row, Source};
use crate::failure::{quoted, Failure};
use crate::limits::{grouped, MAX_FIELD_BYTES, MAX_FIELD_TEXT, MAX_ROWS};

/// A checked `oauthtoken` table, its file open in a read transaction.
pub struct Table {
    conn: Connection,
    /// The field each column holds, in the table's order.
    columns: Vec<Field>,
}

/// Opens `path` read-only, distrusting its schema and bounding every value.
fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    let max = i32::try_from(MAX_FIELD_BYTES).unwrap_or(i32::MAX);
    conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, max)?;
    Ok(conn)
}

/// Why SQLite failed, at `at` if it was reading a row.
fn sqlite_failure(shown: &str, at: Option<Location>, e: &rusqlite::Error) -> Failure {
    let too_big = e.sqlite_error_code() == Some(ErrorCode::TooBig);
    match (at, too_big) {
        (Some(at), true) => Failure::error(format!(
            "cannot import {shown}: {at} has a value longer than {MAX_FIELD_TEXT}; nothing was imported"
        )),
        (Some(at), false) => Failure::error(format!(
            "cannot import {shown}: SQLite could not read {at}: {e}; nothing was imported"
        )),
        (None, _) => Failure::error(format!(
            "cannot import {shown}: SQLite could not read it: {e}; nothing was imported"
        )),
    }
}

/// Opens the file, checks the table and every row; returns the table and its row count.
pub fn check(path: &Path, shown: &str) -> Result<(Table, usize), Failure> {
    let failed = |e: rusqlite::Error| sqlite_failure(shown, None, &e);
    let refused = |why: String| Failure::error(format!("cannot import {shown}: {why}; nothing was imported"));
    let conn = open(path).map_err(failed)?;
    // Both passes see one snapshot.
    conn.execute_batch("BEGIN").map_err(failed)?;
    let kinds: Vec<String> = {
        let mut statement = conn
            .prepare(
                "SELECT type FROM pragma_table_list WHERE schema = 'main' AND lower(name) = 'oauthtoken'",
            )
            .map_err(failed)?;
        let kinds = statement
            .query_map([], |row| row.get(0))
            .map_err(failed)?
            .collect::<Result<_, _>>()
            .map_err(failed)?;
        kinds
    };
    match kinds.first().map(String::as_str) {
        None => {
            return Err(Failure::error(format!(
                "cannot import {shown}: it is a SQLite file without an oauthtoken table"
            )))
        }
        Some("table") => {}
        Some("view") => return Err(refused("its oauthtoken is a view, not a table".to_owned())),
        Some("virtual") => {
            return Err(refused(
                "its oauthtoken is a virtual table; only a plain table is read".to_owned(),
            ))
        }
        Some(other) => {
            return Err(refused(format!(
                "its oauthtoken is a {} table; only a plain table is read",
                quoted(other)
            )))
        }
    }
    // SQLite keeps a column name's bytes as the schema spells them, and rusqlite panics on
    // a name that is not UTF-8: such a table is refused before any name is read as text.
    if has_a_name_not_utf8(&conn).map_err(failed)? {
        return Err(refused(format!(
            "the oauthtoken table has a column whose name is not UTF-8; the SDK's columns are {}",
            column_list(Source::Sqlite)
        )));
    }
    let computed: Option<String> = conn
        .query_row(
            "SELECT name FROM pragma_table_xinfo('oauthtoken') WHERE hidden <> 0 ORDER BY cid LIMIT 1",
            [],
            |row| row.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })
        .map_err(failed)?;
    if let Some(name) = computed {
        return Err(refused(format!(
            "the oauthtoken table has a generated column {}; only stored values are read",
            quoted(&name)
        )));
    }
    let mut statement = conn.prepare("SELECT * FROM oauthtoken").map_err(failed)?;
    let names: Vec<String> = statement.column_names().map(str::to_lowercase).collect();
    let columns = header_columns(names.iter().map(String::as_str), Source::Sqlite, shown)?;
    let mut rows = statement.query([]).map_err(failed)?;
    let mut count = 0;
    // Stepping reads every column of the row, so an oversized value fails here.
    while rows
        .next()
        .map_err(|e| sqlite_failure(shown, Some(Location::Row(count + 1)), &e))?
        .is_some()
    {
        if count == MAX_ROWS {
            return Err(refused(format!(
                "the oauthtoken table has more than {} rows, the most one import takes",
                grouped(MAX_ROWS)
            )));
        }
        count += 1;
    }
    drop(rows);
    drop(statement);
    Ok((Table { conn, columns }, count))
}

/// Whether a column of `oauthtoken` (hidden ones included) has a name that is not UTF-8.
fn has_a_name_not_utf8(conn: &Connection) -> rusqlite::Result<bool> {
    let mut statement = conn.prepare("SELECT name FROM pragma_table_xinfo('oauthtoken')")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        if let ValueRef::Text(name) | ValueRef::Blob(name) = row.get_ref(0)? {
            if std::str::from_utf8(name).is_err() {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

impl Table {
    /// The second pass: one token at a time, in the order of the first.
    pub fn for_each_row(
        &self,
        shown: &str,
        each: &mut dyn FnMut(Row) -> ControlFlow<()>,
    ) -> Result<(), Failure> {
        let failed = |at: Option<Location>, e: rusqlite::Error| {
            let where_ = at.map_or_else(String::new, |at| format!(" at {at}"));
            Failure::error(format!("cannot read {shown} again{where_}: {e}"))
        };
        let mut statement = self
            .conn
            .prepare("SELECT * FROM oauthtoken")
            .map_err(|e| failed(None, e))?;
        let mut rows = statement.query([]).map_err(|e| failed(None, e))?;
        let mut n = 0;
        loop {
            let at = Location::Row(n + 1);
            let Some(row) = rows.next().map_err(|e| failed(Some(at), e))? else {
                return Ok(());
            };
            n += 1;
            let mut values = Vec::with_capacity(self.columns.len());
            for i in 0..self.columns.len() {
                values.push(row.get_ref(i).map_err(|e| failed(Some(at), e))?);
            }
            let token = row_token(&self.columns, &values);
            let row = Row { at, token };
            if each(row).is_break() {
                return Ok(());
            }
        }
    }
}

/// A row's token: each text copied once, from SQLite's row into the token.
fn row_token(columns: &[Field], values: &[ValueRef<'_>]) -> Result<OAuthToken, String> {
    let mut texts: Vec<(Field, Cow<'_, str>)> = Vec::with_capacity(columns.len());
    let mut expiry = None;
    let mut problem = None;
    for (column, value) in columns.iter().zip(values) {
        match value_of(*column, *value) {
            Ok(Value::Absent) => {}
            Ok(Value::Millis(ms)) => expiry = Some(ms),
            Ok(Value::Text(text)) => texts.push((*column, text)),
            Err(why) => {
                problem.get_or_insert(why);
            }
        }
    }
    let token = match problem {
        Some(why) => Err(why),
        None => OAuthToken::from_text_pieces(texts.iter().map(|(f, t)| (*f, std::iter::once(&**t))))
            .map(|mut token| {
                token.set_expiry_time(expiry);
                token
            })
            .map_err(|e| e.to_string()),
    };
    for (_, text) in &mut texts {
        if let Cow::Owned(s) = text {
            s.zeroize();
        }
    }
    token
}

/// A cell as the token takes it.
enum Value<'a> {
    Absent,
    Millis(i64),
    Text(Cow<'a, str>),
}

fn value_of(column: Field, value: ValueRef<'_>) -> Result<Value<'_>, String> {
    let name = column_name(column, Source::Sqlite);
    match (value, column) {
        (ValueRef::Null, _) => Ok(Value::Absent),
        (ValueRef::Integer(n), Field::ExpiryTime) => Ok(Value::Millis(n)),
        (ValueRef::Real(x), Field::ExpiryTime) => {
            // Within i64 and whole: the cast is exact.
            if x.fract() == 0.0 && (-9.2e18..=9.2e18).contains(&x) {
                #[allow(clippy::cast_possible_truncation, reason = "whole and in range: exact")]
                Ok(Value::Millis(x as i64))
            } else {
                Err("expiry_time is not a whole number of milliseconds".to_owned())
            }
        }
        (ValueRef::Text(bytes) | ValueRef::Blob(bytes), Field::ExpiryTime) => {
            match std::str::from_utf8(bytes) {
                Ok("") => Ok(Value::Absent),
                Ok(text) => parse_expiry(text).map(Value::Millis),
                Err(_) => Err(format!("{name} is not valid UTF-8")),
            }
        }
        (ValueRef::Integer(n), _) => Ok(Value::Text(Cow::Owned(n.to_string()))),
        (ValueRef::Real(_), _) => Err(format!("{name} is a number, not text")),
        (ValueRef::Text(bytes) | ValueRef::Blob(bytes), _) => match std::str::from_utf8(bytes) {
            Ok(text) => Ok(Value::Text(Cow::Borrowed(text))),
            Err(_) => Err(format!("{name} is not valid UTF-8")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_distrusts_the_schema_and_bounds_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("create table t(x)")
            .unwrap();
        let conn = open(&path).unwrap();
        assert!(!conn.db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA).unwrap());
        assert!(conn.db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE).unwrap());
        assert_eq!(
            conn.limit(Limit::SQLITE_LIMIT_LENGTH).unwrap() as usize,
            MAX_FIELD_BYTES
        );
        // A value over the cap is refused by SQLite itself, before it is built.
        let e = conn
            .query_row("SELECT zeroblob(?1)", [MAX_FIELD_BYTES as i64 + 1], |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .unwrap_err();
        assert_eq!(e.sqlite_error_code(), Some(ErrorCode::TooBig));
        assert!(
            conn.execute_batch("insert into t values (1)").is_err(),
            "read-only"
        );
    }
}
