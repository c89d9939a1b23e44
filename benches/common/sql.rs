//! Peers (c) and (d): the SDK's `oauthtoken` table in SQLite (or SQLCipher, when `key` is
//! given), with indexes on the lookup columns, prepared (cached) statements and WAL.
//! Durable: `synchronous=FULL` (every commit fsyncs the WAL); buffered: `synchronous=NORMAL`
//! (a crash of the app loses nothing, a power loss may lose the last commits).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension, Row};
use tokenvault::OAuthToken;

use super::harness::{fresh_id, Peer, R};

pub struct SqlPeer {
    conn: Option<Connection>,
    dir: PathBuf,
    key: Option<String>,
}

const COLUMNS: &str = "id, user_name, client_id, client_secret, refresh_token, access_token, \
                       grant_token, expiry_time, redirect_url, api_domain";

fn row_token(r: &Row<'_>) -> rusqlite::Result<OAuthToken> {
    let mut t = OAuthToken::default();
    let s = |i: usize| r.get::<_, Option<String>>(i);
    t.set_id(s(0)?);
    t.set_user_name(s(1)?);
    t.set_client_id(s(2)?);
    t.set_client_secret(s(3)?);
    t.set_refresh_token(s(4)?);
    t.set_access_token(s(5)?);
    t.set_grant_token(s(6)?);
    t.set_expiry_time(s(7)?.and_then(|e| e.parse().ok()));
    t.set_redirect_url(s(8)?);
    t.set_api_domain(s(9)?);
    Ok(t)
}

impl SqlPeer {
    pub fn create(dir: PathBuf, key: Option<&str>) -> R<SqlPeer> {
        std::fs::create_dir_all(&dir)?;
        let mut p = SqlPeer {
            conn: None,
            dir,
            key: key.map(str::to_owned),
        };
        p.open(false)?;
        p.conn()?.execute_batch(
            "CREATE TABLE oauthtoken(id varchar(10) PRIMARY KEY, user_name varchar(255), \
             client_id varchar(255), client_secret varchar(255), refresh_token varchar(255), \
             access_token varchar(255), grant_token varchar(255), expiry_time varchar(20), \
             redirect_url varchar(255), api_domain varchar(255));
             CREATE UNIQUE INDEX oauthtoken_user ON oauthtoken(user_name);
             CREATE INDEX oauthtoken_access ON oauthtoken(access_token);
             CREATE INDEX oauthtoken_refresh ON oauthtoken(refresh_token);
             CREATE INDEX oauthtoken_grant ON oauthtoken(grant_token);",
        )?;
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
        conn.prepare_cached(&format!(
            "INSERT INTO oauthtoken({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
        ))?
        .execute(params![
            id,
            t.user_name(),
            t.client_id(),
            t.client_secret(),
            t.refresh_token(),
            t.access_token(),
            t.grant_token(),
            t.expiry_time().map(|e| e.to_string()),
            t.redirect_url(),
            t.api_domain()
        ])?;
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
            &format!("SELECT {COLUMNS} FROM oauthtoken WHERE user_name = ?1"),
            &[&user],
        )
    }

    fn by_access(&mut self, access: &str) -> R<Option<OAuthToken>> {
        self.one(
            &format!("SELECT {COLUMNS} FROM oauthtoken WHERE access_token = ?1"),
            &[&access],
        )
    }

    fn by_refresh(&mut self, client_id: &str, _secret: &str, refresh: &str) -> R<Option<OAuthToken>> {
        self.one(
            &format!("SELECT {COLUMNS} FROM oauthtoken WHERE refresh_token = ?1 AND client_id = ?2"),
            &[&refresh, &client_id],
        )
    }

    fn by_grant(&mut self, client_id: &str, _secret: &str, grant: &str) -> R<Option<OAuthToken>> {
        self.one(
            &format!("SELECT {COLUMNS} FROM oauthtoken WHERE grant_token = ?1 AND client_id = ?2"),
            &[&grant, &client_id],
        )
    }

    fn by_id(&mut self, id: &str) -> R<Option<OAuthToken>> {
        self.one(&format!("SELECT {COLUMNS} FROM oauthtoken WHERE id = ?1"), &[&id])
    }

    fn all(&mut self) -> R<usize> {
        let conn = self.conn()?;
        let mut st = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM oauthtoken"))?;
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
