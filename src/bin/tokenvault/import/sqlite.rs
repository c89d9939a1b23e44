//! The SQL stores' `oauthtoken` table, read from a SQLite file opened read-only.
//!
//! Invariants: the file is never written (read-only open, one SELECT); values are taken
//! as SQLite stores them (the seed schema says varchar, but SQLite keeps whatever was
//! inserted): text, or an integer for any column, or a whole real number for
//! `expiry_time`; anything else rejects the row without quoting the value.

use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use tokenvault::OAuthToken;
use zeroize::Zeroizing;

use super::{header_columns, set_text, Column, Location, Row, Source};
use crate::failure::Failure;

/// Reads every row of `oauthtoken`.
pub(super) fn read(path: &Path, shown: &str) -> Result<Vec<Row>, Failure> {
    let failed = |e: rusqlite::Error| {
        Failure::error(format!(
            "cannot import {shown}: SQLite could not read it: {e}; nothing was imported"
        ))
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(failed)?;
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND lower(name) = 'oauthtoken'",
            [],
            |row| row.get(0),
        )
        .map_err(failed)?;
    if tables == 0 {
        return Err(Failure::error(format!(
            "cannot import {shown}: it is a SQLite file without an oauthtoken table"
        )));
    }
    let mut statement = conn.prepare("SELECT * FROM oauthtoken").map_err(failed)?;
    let names: Vec<String> = statement.column_names().map(str::to_lowercase).collect();
    let columns = header_columns(names.iter().map(String::as_str), Source::Sqlite, shown)?;
    let mut rows = statement.query([]).map_err(failed)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(failed)? {
        let mut token = OAuthToken::default();
        let mut problem = None;
        for (i, column) in columns.iter().enumerate() {
            let value = row.get_ref(i).map_err(failed)?;
            if let Err(why) = set_value(&mut token, *column, value) {
                problem.get_or_insert(why);
            }
        }
        out.push(Row {
            at: Location::Row(out.len() + 1),
            token: problem.map_or(Ok(token), Err),
        });
    }
    Ok(out)
}

fn set_value(token: &mut OAuthToken, column: Column, value: ValueRef<'_>) -> Result<(), String> {
    let name = column.name(Source::Sqlite);
    match (value, column) {
        (ValueRef::Null, _) => Ok(()),
        (ValueRef::Integer(n), Column::ExpiryTime) => {
            token.set_expiry_time(Some(n));
            Ok(())
        }
        (ValueRef::Real(x), Column::ExpiryTime) => {
            // Within i64 and whole: the cast is exact.
            if x.fract() == 0.0 && (-9.2e18..=9.2e18).contains(&x) {
                token.set_expiry_time(Some(x as i64));
                Ok(())
            } else {
                Err("expiry_time is not a whole number of milliseconds".to_owned())
            }
        }
        (ValueRef::Integer(n), _) => set_text(token, column, Zeroizing::new(n.to_string())),
        (ValueRef::Real(_), _) => Err(format!("{name} is a number, not text")),
        (ValueRef::Text(bytes) | ValueRef::Blob(bytes), _) => match std::str::from_utf8(bytes) {
            Ok(text) => set_text(token, column, Zeroizing::new(text.to_owned())),
            Err(_) => Err(format!("{name} is not valid UTF-8")),
        },
    }
}
