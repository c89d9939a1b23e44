//! Peers (c) and (d): the SDK's `oauthtoken` table in SQLite (or SQLCipher, when `key` is
//! given), with indexes on the lookup columns, prepared (cached) statements and WAL.
//! Durable: `synchronous=FULL` (every commit fsyncs the WAL); buffered: `synchronous=NORMAL`
//! (a crash of the app loses nothing, a power loss may lose the last commits).

use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, Row};
use tokenvault::{Field, FieldValue, OAuthToken};

use super::harness::{fresh_id, Peer, R};

pub(crate) struct SqlPeer {
    conn: Option<Connection>,
    dir: PathBuf,
    key: Option<String>,
}

/// The table's columns: every token field under its name, in the token's order.
static COLUMNS: LazyLock<String> = LazyLock::new(|| Field::ALL.map(Field::name).join(", "));

/// An insert of every column.
static INSERT: LazyLock<String> = LazyLock::new(|| {
    let places: Vec<String> = (1..=Field::ALL.len()).map(|i| format!("?{i}")).collect();
    format!(
        "INSERT INTO oauthtoken({}) VALUES ({})",
        *COLUMNS,
        places.join(", ")
    )
});

/// The SDK's seed schema: text columns (the expiry too), the id the primary key.
fn column_type(field: Field) -> &'static str {
    match field {
        Field::Id => "varchar(10) PRIMARY KEY",
        Field::ExpiryTime => "varchar(20)",
        _ => "varchar(255)",
    }
}

fn row_token(r: &Row<'_>) -> rusqlite::Result<OAuthToken> {
    let mut t = OAuthToken::default();
    for (i, field) in Field::ALL.into_iter().enumerate() {
        let value = r.get::<_, Option<String>>(i)?;
        match field {
            Field::ExpiryTime => t.set_expiry_time(value.and_then(|e| e.parse().ok())),
            _ => t
                .set_text(field, value)
                .expect("every field but the expiry is text"),
        }
    }
    Ok(t)
}

impl SqlPeer {
    pub(crate) fn create(dir: PathBuf, key: Option<&str>) -> R<SqlPeer> {
        std::fs::create_dir_all(&dir)?;
        let mut p = SqlPeer {
            conn: None,
            dir,
            key: key.map(str::to_owned),
        };
        p.open(false)?;
        let columns = Field::ALL.map(|f| format!("{} {}", f.name(), column_type(f)));
        p.conn()?.execute_batch(&format!(
            "CREATE TABLE oauthtoken({});
             CREATE UNIQUE INDEX oauthtoken_user ON oauthtoken(user_name);
             CREATE INDEX oauthtoken_access ON oauthtoken(access_token);
             CREATE INDEX oauthtoken_refresh ON oauthtoken(refresh_token);
             CREATE INDEX oauthtoken_grant ON oauthtoken(grant_token);",
            columns.join(", ")
        ))?;
        Ok(p)
    }

    fn open(&mut self, durable: bool) -> R<()> {
        self.conn = None;
        let conn = Connection::open(self.dir.join("zohooauth.db"))?;
        if let Some(key) = &self.key {
            // A raw 256-bit key (`x'..'`): SQLCipher skips its PBKDF2, as the vault's open
            // time here excludes Argon2.
            conn.execute_batch(&format!("PRAGMA key = \"x'{key}'\";"))?;
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", if durable { "FULL" } else { "NORMAL" })?;
        conn.set_prepared_statement_cache_capacity(32);
        // Forces the key derivation (SQLCipher) and the schema read now.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))?;
        self.conn = Some(conn);
        Ok(())
    }

    fn conn(&self) -> R<&Connection> {
        self.conn.as_ref().ok_or_else(|| "closed".into())
    }

    fn one(&self, sql: &str, p: &[&dyn rusqlite::ToSql]) -> R<Option<OAuthToken>> {
        let conn = self.conn()?;
        let mut st = conn.prepare_cached(sql)?;
        Ok(st.query_row(p, row_token).optional()?)
    }
}

impl Peer for SqlPeer {
    fn insert(&mut self, t: &OAuthToken) -> R<String> {
        let conn = self.conn()?;
        // The SDK's save: find the user's row first (an upsert), then insert.
        let exists = conn
            .prepare_cached("SELECT id FROM oauthtoken WHERE user_name = ?1")?
            .query_row([t.user_name()], |r| r.get::<_, String>(0))
            .optional()?;
        if exists.is_some() {
            return Err("insert: user exists".into());
        }
        let id = fresh_id();
        // Every field as the SDK stores it (the expiry as text), the id a fresh one.
        let values = Field::ALL.map(|f| match (f, t.get(f)) {
            (Field::Id, _) => ToSqlOutput::Borrowed(ValueRef::Text(id.as_bytes())),
            (_, Some(FieldValue::Text(v))) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            (_, Some(FieldValue::Millis(ms))) => ToSqlOutput::Owned(Value::Text(ms.to_string())),
            (_, None) => ToSqlOutput::Owned(Value::Null),
        });
        conn.prepare_cached(&INSERT)?
            .execute(rusqlite::params_from_iter(values))?;
        Ok(id)
    }

    fn update(&mut self, id: &str, access: &str, expiry: i64) -> R<()> {
        let n = self
            .conn()?
            .prepare_cached("UPDATE oauthtoken SET access_token = ?2, expiry_time = ?3 WHERE id = ?1")?
            .execute(params![id, access, expiry.to_string()])?;
        if n != 1 {
            return Err("update: no row".into());
        }
        Ok(())
    }

    fn by_user(&mut self, user: &str) -> R<Option<OAuthToken>> {
        self.one(
            &format!("SELECT {} FROM oauthtoken WHERE user_name = ?1", *COLUMNS),
            &[&user],
        )
    }

    fn by_access(&mut self, access: &str) -> R<Option<OAuthToken>> {
        self.one(
            &format!("SELECT {} FROM oauthtoken WHERE access_token = ?1", *COLUMNS),
            &[&access],
        )
    }

    fn by_refresh(&mut self, client_id: &str, _secret: &str, refresh: &str) -> R<Option<OAuthToken>> {
        self.one(
            &format!(
                "SELECT {} FROM oauthtoken WHERE refresh_token = ?1 AND client_id = ?2",
                *COLUMNS
            ),
            &[&refresh, &client_id],
        )
    }

    fn by_grant(&mut self, client_id: &str, _secret: &str, grant: &str) -> R<Option<OAuthToken>> {
        self.one(
            &format!(
                "SELECT {} FROM oauthtoken WHERE grant_token = ?1 AND client_id = ?2",
                *COLUMNS
            ),
            &[&grant, &client_id],
        )
    }

    fn by_id(&mut self, id: &str) -> R<Option<OAuthToken>> {
        self.one(
            &format!("SELECT {} FROM oauthtoken WHERE id = ?1", *COLUMNS),
            &[&id],
        )
    }

    fn all(&mut self) -> R<usize> {
        let conn = self.conn()?;
        let mut st = conn.prepare_cached(&format!("SELECT {} FROM oauthtoken", *COLUMNS))?;
        let all: Vec<OAuthToken> = st.query_map([], row_token)?.collect::<Result<_, _>>()?;
        Ok(all.len())
    }

    fn delete(&mut self, id: &str) -> R<()> {
        self.conn()?
            .prepare_cached("DELETE FROM oauthtoken WHERE id = ?1")?
            .execute([id])?;
        Ok(())
    }

    fn reopen(&mut self, durable: bool) -> R<Duration> {
        self.conn = None;
        let t = Instant::now();
        self.open(durable)?;
        Ok(t.elapsed())
    }

    fn flush(&mut self) -> R<()> {
        // A checkpoint moves the WAL into the database file, so the disk figure is stable.
        self.conn()?.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        Ok(())
    }

    fn dir(&self) -> PathBuf {
        self.dir.clone()
    }
}
