//! A SQLite file built from the input through `tokenvault import`'s reading of the SQL
//! stores' `oauthtoken` table.
//!
//! The input chooses the table and its rows: the SDK's schema or a hostile one (a view, a
//! virtual table, a generated column, a WITHOUT ROWID or STRICT table, declared types that
//! convert what is stored, a missing or an extra column, no such table), the column order
//! and spelling, WAL mode, rows of any SQLite type (text that is not UTF-8, whole and
//! fractional reals, values at and just over the 4 MiB value cap), and bytes of the
//! finished file overwritten.
//!
//! Protects against, beyond a panic:
//! - a hostile schema read instead of refused, or a plain table refused: each refusal
//!   says why; a plain table with the ten columns is read (a WAL file may be refused);
//! - wrong data: every row is the token its stored values make (read back through a
//!   separate connection), or rejected if a value cannot be a token's; a value over the
//!   cap refuses the file, naming the row; where the declared type converts nothing, the
//!   stored values are the ones given;
//! - the two passes disagreeing: the rows handed on are as many as were counted;
//! - unbounded memory: the Rust heap the import holds at once is at most twice the
//!   largest row plus 1 MiB, SQLite's own at most twice that plus 16 MiB (and libFuzzer's
//!   `-rss_limit_mb`, set by fuzz/run.sh, bounds the process).
//!
//! A file with overwritten bytes has no oracle: its import must only end in a clean
//! result within those bounds.
#![no_main]

use std::fs;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{params_from_iter, Connection};
use tokenvault::OAuthToken;
use tokenvault_fuzz::cli::{self, Location, MAX_FIELD_BYTES};
use tokenvault_fuzz::peak::{self, PeakAlloc};
use tokenvault_fuzz::process_dir;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

const MAX_ROWS: usize = 24;
const MAX_PATCHES: usize = 16;

/// The SQL stores' column names, in the SDK's order (`expiry_time` is the eighth).
const COLUMNS: [&str; 10] = [
    "id",
    "user_name",
    "client_id",
    "client_secret",
    "refresh_token",
    "access_token",
    "grant_token",
    "expiry_time",
    "redirect_url",
    "api_domain",
];
const EXPIRY: usize = 7;
const REDIRECT: usize = 8;

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `create table oauthtoken(...)`, the declared types as chosen.
    Plain,
    /// The SDK's own: `id` the primary key (so ids are unique).
    IdPrimaryKey,
    /// `id` the primary key of a WITHOUT ROWID table (rows come in id order).
    WithoutRowid,
    /// A STRICT table: a value of the wrong type is refused when inserted.
    Strict,
    /// A view over a table that holds the rows.
    View,
    /// An FTS5 virtual table.
    Virtual,
    /// One column computed from another.
    Generated { column: u8, stored: bool },
    /// One column left out.
    Missing(u8),
    /// An eleventh column.
    Extra,
    /// The rows in a table of another name.
    Absent,
}

impl Kind {
    /// Whether the importer must read it (rather than refuse it).
    fn readable(self) -> bool {
        matches!(
            self,
            Kind::Plain | Kind::IdPrimaryKey | Kind::WithoutRowid | Kind::Strict
        )
    }
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum Decl {
    None,
    Varchar,
    Text,
    Blob,
    Integer,
    Real,
    Numeric,
}

impl Decl {
    fn sql(self, strict: bool) -> &'static str {
        match (self, strict) {
            (Decl::None, false) => "",
            (Decl::None | Decl::Numeric, true) => "ANY",
            (Decl::Varchar, false) => "varchar(255)",
            (Decl::Varchar | Decl::Text, _) => "TEXT",
            (Decl::Blob, _) => "BLOB",
            (Decl::Integer, _) => "INTEGER",
            (Decl::Real, _) => "REAL",
            (Decl::Numeric, false) => "NUMERIC",
        }
    }

    /// Whether SQLite stores every value as it is given (no type affinity), in a table
    /// that is not STRICT.
    fn converts_nothing(self) -> bool {
        matches!(self, Decl::None | Decl::Blob)
    }
}

/// A value of about the 4 MiB cap (one per input at most: each costs milliseconds).
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Big {
    row: u8,
    column: u8,
    text: bool,
    len: BigLen,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum BigLen {
    AtCap,
    OverCap,
    Near(u16),
}

impl BigLen {
    fn len(self) -> usize {
        match self {
            BigLen::AtCap => MAX_FIELD_BYTES,
            BigLen::OverCap => MAX_FIELD_BYTES + 1,
            BigLen::Near(n) => MAX_FIELD_BYTES - 1000 + usize::from(n % 2000),
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
enum Cell {
    Null,
    Text(String),
    Blob(Vec<u8>),
    /// Bytes stored as text: SQLite does not check that text is UTF-8.
    RawText(Vec<u8>),
    Int(i64),
    Real(f64),
    /// A small whole number as text, a real or an integer (the expiry's shapes).
    Number(i16, u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    kind: Kind,
    decls: [Decl; 10],
    /// A permutation of the columns (a seed).
    order: u64,
    /// Column names in upper case.
    upper: bool,
    /// The redirect column spelled as the CSV header spells it.
    redirect_uri: bool,
    wal: bool,
    rows: Vec<[Cell; 10]>,
    /// A cell replaced by a value of about the cap.
    big: Option<Big>,
    /// Bytes of the finished file overwritten: (offset, byte).
    patches: Vec<(u32, u8)>,
}

/// A stored value, read back.
#[derive(Debug, Clone, PartialEq)]
enum Stored {
    Null,
    Int(i64),
    Real(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

impl Stored {
    fn of(v: ValueRef<'_>) -> Stored {
        match v {
            ValueRef::Null => Stored::Null,
            ValueRef::Integer(n) => Stored::Int(n),
            ValueRef::Real(x) => Stored::Real(x),
            ValueRef::Text(t) => Stored::Text(t.to_vec()),
            ValueRef::Blob(b) => Stored::Blob(b.to_vec()),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Stored::Text(b) | Stored::Blob(b) => b.len(),
            _ => 8,
        }
    }
}

fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| process_dir("import_sqlite"))
}

/// The column order: a permutation of 0..10 drawn from `seed`.
fn permutation(mut seed: u64) -> [usize; 10] {
    let mut order: [usize; 10] = std::array::from_fn(|i| i);
    for i in (1..order.len()).rev() {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        order.swap(i, (seed >> 33) as usize % (i + 1));
    }
    order
}

/// A cell as an insert's parameter and its placeholder.
fn param(cell: &Cell) -> (ToSqlOutput<'static>, &'static str) {
    let owned = |v: Value| ToSqlOutput::Owned(v);
    match cell {
        Cell::Null => (owned(Value::Null), "?"),
        Cell::Text(s) => (owned(Value::Text(s.clone())), "?"),
        Cell::Blob(b) => (owned(Value::Blob(b.clone())), "?"),
        Cell::RawText(b) => (owned(Value::Blob(b.clone())), "CAST(? AS TEXT)"),
        Cell::Int(n) => (owned(Value::Integer(*n)), "?"),
        Cell::Real(x) => (owned(Value::Real(*x)), "?"),
        Cell::Number(n, 0..=84) => (owned(Value::Text(format!(" {n}"))), "?"),
        Cell::Number(n, 85..=169) => (owned(Value::Real(f64::from(*n))), "?"),
        Cell::Number(n, _) => (owned(Value::Integer(i64::from(*n))), "?"),
    }
}

/// Where the big value goes, if anywhere: (row, column in the SDK's order, value).
fn big_at(input: &Input) -> Option<(usize, usize, Big)> {
    let rows = input.rows.len().min(MAX_ROWS);
    let big = input.big.filter(|_| rows > 0)?;
    Some((
        usize::from(big.row) % rows,
        usize::from(big.column) % COLUMNS.len(),
        big,
    ))
}

/// The big value as an insert's parameter and its placeholder.
fn big_param(big: Big) -> (ToSqlOutput<'static>, &'static str) {
    let len = i64::try_from(big.len.len()).expect("a small length");
    let placeholder = if big.text {
        "CAST(zeroblob(?) AS TEXT)"
    } else {
        "zeroblob(?)"
    };
    (ToSqlOutput::Owned(Value::Integer(len)), placeholder)
}

/// What the file holds: the names of the columns in table order.
struct Built {
    names: Vec<String>,
    /// The columns in table order, as indexes into [`COLUMNS`] (`None`: not an SDK column).
    order: Vec<Option<usize>>,
}

/// Writes the database; `None` if SQLite refused the schema.
fn build(path: &Path, input: &Input) -> Option<Built> {
    let conn = Connection::open(path).expect("create the database");
    if input.wal {
        conn.pragma_update(None, "journal_mode", "wal").expect("WAL mode");
    }
    let strict = input.kind == Kind::Strict;
    let mut order: Vec<Option<usize>> = permutation(input.order).into_iter().map(Some).collect();
    match input.kind {
        Kind::Missing(i) => order.retain(|c| *c != Some(usize::from(i) % COLUMNS.len())),
        Kind::Extra => order.push(None),
        _ => {}
    }
    let name = |c: Option<usize>| {
        let name = match c {
            Some(REDIRECT) if input.redirect_uri => "redirect_uri",
            Some(c) => COLUMNS[c],
            None => "colour",
        };
        if input.upper {
            name.to_uppercase()
        } else {
            name.to_owned()
        }
    };
    let names: Vec<String> = order.iter().map(|c| name(*c)).collect();
    let generated = match input.kind {
        Kind::Generated { column, stored } => Some((usize::from(column) % order.len(), stored)),
        _ => None,
    };
    let definitions: Vec<String> = order
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let decl = c.map_or(Decl::None, |c| input.decls[c]);
            let mut def = format!("\"{}\" {}", names[i], decl.sql(strict));
            if c == &Some(0) && matches!(input.kind, Kind::IdPrimaryKey | Kind::WithoutRowid) {
                def.push_str(" PRIMARY KEY");
            }
            if let Some((g, stored)) = generated.filter(|(g, _)| *g == i) {
                let source = &names[(g + 1) % names.len()];
                let how = if stored { "STORED" } else { "VIRTUAL" };
                def.push_str(&format!(" GENERATED ALWAYS AS (\"{source}\" || '') {how}"));
            }
            def
        })
        .collect();
    let columns = definitions.join(", ");
    let (table, schema) = match input.kind {
        Kind::View => (
            "t",
            format!("CREATE TABLE t({columns}); CREATE VIEW oauthtoken AS SELECT * FROM t;"),
        ),
        Kind::Virtual => (
            "oauthtoken",
            format!(
                "CREATE VIRTUAL TABLE oauthtoken USING fts5({});",
                names.join(", ")
            ),
        ),
        Kind::Absent => ("tokens", format!("CREATE TABLE tokens({columns});")),
        Kind::WithoutRowid => (
            "oauthtoken",
            format!("CREATE TABLE oauthtoken({columns}) WITHOUT ROWID;"),
        ),
        Kind::Strict => (
            "oauthtoken",
            format!("CREATE TABLE oauthtoken({columns}) STRICT;"),
        ),
        _ => ("oauthtoken", format!("CREATE TABLE oauthtoken({columns});")),
    };
    conn.execute_batch(&schema).ok()?;
    // One transaction for the rows: a journal per insert would cost more than the import.
    conn.execute_batch("PRAGMA synchronous = OFF; BEGIN")
        .expect("begin");
    // Insert into every column but a generated one.
    let written: Vec<usize> = (0..order.len())
        .filter(|i| generated.is_none_or(|(g, _)| g != *i))
        .collect();
    let big = big_at(input);
    for (r, row) in input.rows.iter().take(MAX_ROWS).enumerate() {
        let (values, placeholders): (Vec<_>, Vec<_>) = written
            .iter()
            .map(|&i| match (order[i], big) {
                (Some(c), Some((br, bc, b))) if (br, bc) == (r, c) => big_param(b),
                (Some(c), _) => param(&row[c]),
                (None, _) => (ToSqlOutput::Owned(Value::Null), "?"),
            })
            .unzip();
        let insert = format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            written
                .iter()
                .map(|&i| format!("\"{}\"", names[i]))
                .collect::<Vec<_>>()
                .join(", "),
            placeholders.join(", ")
        );
        // A row the table's constraints refuse (a duplicate id, a STRICT type) is not in it.
        let _ = conn.execute(&insert, params_from_iter(values));
    }
    conn.execute_batch("COMMIT").expect("commit");
    conn.close().expect("close the database");
    Some(Built { names, order })
}

/// The rows as a separate connection reads them (`SELECT *`, the importer's order), the
/// cells in the SDK's column order.
fn read_back(path: &Path, built: &Built) -> Vec<[Stored; 10]> {
    let conn = Connection::open(path).expect("open the database again");
    let mut statement = conn.prepare("SELECT * FROM oauthtoken").expect("select");
    assert_eq!(statement.column_count(), built.names.len());
    let mut rows = statement.query([]).expect("query");
    let mut out = Vec::new();
    while let Some(row) = rows.next().expect("read a row back") {
        let mut cells: [Stored; 10] = std::array::from_fn(|_| Stored::Null);
        for (i, c) in built.order.iter().enumerate() {
            let c = c.expect("an SDK column");
            cells[c] = Stored::of(row.get_ref(i).expect("a cell"));
        }
        out.push(cells);
    }
    out
}

fn set(token: &mut OAuthToken, column: usize, text: String) {
    match column {
        0 => token.set_id(Some(text)),
        1 => token.set_user_name(Some(text)),
        2 => token.set_client_id(Some(text)),
        3 => token.set_client_secret(Some(text)),
        4 => token.set_refresh_token(Some(text)),
        5 => token.set_access_token(Some(text)),
        6 => token.set_grant_token(Some(text)),
        8 => token.set_redirect_url(Some(text)),
        9 => token.set_api_domain(Some(text)),
        _ => unreachable!("the expiry is a number"),
    }
}

/// The token a row's stored values make, as the importer's rules say: NULL or empty text
/// is absent; text (UTF-8) or an integer for any column; for `expiry_time` also a whole
/// real, and text only as a decimal integer (spaces around it allowed); anything else
/// rejects the row.
fn expected(cells: &[Stored; 10]) -> Option<OAuthToken> {
    let mut token = OAuthToken::default();
    for (c, cell) in cells.iter().enumerate() {
        let text = match cell {
            Stored::Null => continue,
            Stored::Int(n) if c == EXPIRY => {
                token.set_expiry_time(Some(*n));
                continue;
            }
            Stored::Int(n) => n.to_string(),
            Stored::Real(x) if c == EXPIRY => {
                if x.fract() != 0.0 || x.abs() > 9.2e18 {
                    return None;
                }
                token.set_expiry_time(Some(*x as i64));
                continue;
            }
            Stored::Real(_) => return None,
            Stored::Text(b) | Stored::Blob(b) => String::from_utf8(b.clone()).ok()?,
        };
        if text.is_empty() {
            continue;
        }
        if c == EXPIRY {
            token.set_expiry_time(Some(text.trim().parse().ok()?));
        } else {
            set(&mut token, c, text);
        }
    }
    Some(token)
}

/// The value `cell` was inserted as, if it was inserted as one.
fn given(cell: &Cell) -> Option<Stored> {
    match cell {
        Cell::Null => Some(Stored::Null),
        Cell::Text(s) => Some(Stored::Text(s.as_bytes().to_vec())),
        Cell::Blob(b) => Some(Stored::Blob(b.clone())),
        Cell::Int(n) => Some(Stored::Int(*n)),
        Cell::Real(x) if !x.is_nan() => Some(Stored::Real(*x)),
        _ => None,
    }
}

fn remove_files() {
    for name in [
        "oauthtoken.db",
        "oauthtoken.db-wal",
        "oauthtoken.db-shm",
        "oauthtoken.db-journal",
    ] {
        let _ = fs::remove_file(dir().join(name));
    }
}

fuzz_target!(|input: Input| {
    remove_files();
    let path = dir().join("oauthtoken.db");
    let Some(built) = build(&path, &input) else {
        return;
    };
    let patches: Vec<(u32, u8)> = input.patches.iter().take(MAX_PATCHES).copied().collect();
    let oracle = if patches.is_empty() {
        input.kind.readable().then(|| read_back(&path, &built))
    } else {
        let mut bytes = fs::read(&path).expect("read the database");
        for (at, byte) in &patches {
            if !bytes.is_empty() {
                let at = *at as usize % bytes.len();
                bytes[at] = *byte;
            }
        }
        fs::write(&path, &bytes).expect("write the database");
        None
    };
    // The largest row: what the import may hold of one.
    let largest = oracle.as_ref().map_or(0, |rows| {
        rows.iter()
            .map(|r| r.iter().map(Stored::bytes).sum::<usize>())
            .max()
            .unwrap_or(0)
    });
    let largest = if patches.is_empty() {
        largest
    } else {
        10 * (MAX_FIELD_BYTES + 1)
    };

    let ((result, held), sqlite_held) = peak::measure_sqlite(|| {
        peak::measure(|| {
            let store = cli::import(&path);
            if let Ok(store) = &store {
                let mut handed = 0;
                let read = store.for_each_row(|_| {
                    handed += 1;
                    ControlFlow::Continue(())
                });
                if let Err(f) = read {
                    panic!("a checked table could not be read again: {f}");
                }
                assert_eq!(handed, store.rows(), "rows handed on vs rows counted");
            }
            store
        })
    });
    let bound = 2 * largest + (1 << 20);
    assert!(
        held <= bound,
        "the import held {held} bytes of Rust heap (bound {bound})"
    );
    let sqlite_bound = 2 * largest + (16 << 20);
    assert!(
        sqlite_held <= sqlite_bound,
        "SQLite held {sqlite_held} bytes during the import (bound {sqlite_bound})"
    );

    let message = result.as_ref().err().map(ToString::to_string);
    if let Some(m) = &message {
        assert!(!m.contains('\n'), "a message on two lines: {m}");
        assert!(m.starts_with("cannot import "), "{m}");
    }
    if !patches.is_empty() {
        return;
    }
    if !input.kind.readable() {
        let m = message.unwrap_or_else(|| panic!("a {:?} oauthtoken was read", input.kind));
        let why = match input.kind {
            Kind::View => "is a view",
            Kind::Virtual => "is a virtual table",
            Kind::Generated { .. } => "has a generated column",
            Kind::Missing(_) => "has no \"",
            Kind::Extra => "has an unknown column \"colour\"",
            Kind::Absent => "without an oauthtoken table",
            _ => unreachable!(),
        };
        assert!(
            m.contains(why),
            "a {:?} refused for another reason: {m}",
            input.kind
        );
        return;
    }
    let stored = oracle.expect("an oracle for a readable table");
    // Where SQLite converts nothing, the stored values are the given ones.
    // (Only a plain table keeps every row, in the order given.)
    if input.kind == Kind::Plain {
        assert_eq!(
            stored.len(),
            input.rows.len().min(MAX_ROWS),
            "rows stored vs given"
        );
        for (i, (cells, row)) in stored.iter().zip(&input.rows).enumerate() {
            for (c, value) in cells.iter().enumerate() {
                if !input.decls[c].converts_nothing() || big_at(&input).is_some_and(|b| (b.0, b.1) == (i, c))
                {
                    continue;
                }
                if let Some(given) = given(&row[c]) {
                    assert_eq!(
                        *value,
                        given,
                        "row {} column {} stored otherwise",
                        i + 1,
                        COLUMNS[c]
                    );
                }
            }
        }
    }
    let too_big = stored
        .iter()
        .position(|cells| cells.iter().any(|c| c.bytes() > MAX_FIELD_BYTES));
    match (too_big, message) {
        (Some(i), Some(m)) => assert!(
            m.contains(&format!("row {} has a value longer than", i + 1)),
            "a value over the cap at row {} refused otherwise: {m}",
            i + 1
        ),
        (Some(i), None) => panic!("row {} holds a value over the cap, and was read", i + 1),
        // A WAL file may need a shared-memory file a read-only open cannot make.
        (None, Some(m)) if input.wal => {
            assert!(m.contains("SQLite could not read it"), "{m}")
        }
        (None, Some(m)) => panic!("a plain oauthtoken table refused: {m}"),
        (None, None) => {
            let store = result.expect("an accepted table");
            let mut rows = Vec::with_capacity(store.rows());
            store
                .for_each_row(|row| {
                    rows.push((row.at, row.token));
                    ControlFlow::Continue(())
                })
                .unwrap_or_else(|f| panic!("a checked table could not be read a third time: {f}"));
            assert_eq!(rows.len(), stored.len(), "rows read vs rows stored");
            for (i, ((at, token), cells)) in rows.iter().zip(&stored).enumerate() {
                assert_eq!(*at, Location::Row(i + 1));
                match (token, expected(cells)) {
                    (Ok(got), Some(want)) => {
                        assert!(*got == want, "row {} read as another token", i + 1)
                    }
                    (Err(why), None) => assert!(!why.is_empty()),
                    (Ok(_), None) => panic!("row {} accepted: {cells:?}", i + 1),
                    (Err(why), Some(_)) => panic!("row {} rejected: {why}", i + 1),
                }
            }
        }
    }
});
