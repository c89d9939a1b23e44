//! The same tokens written as the SDK file store's CSV and as the SQL stores' `oauthtoken`
//! table in a SQLite file, each imported by `tokenvault import`: the two must read as the
//! same rows, and those rows must be the tokens written.
//!
//! Each side has its own column order (the importer maps columns by name); the SQLite
//! table is the SDK's (`varchar`, `id` the primary key: a row with an id already used is
//! not inserted, and left out of the CSV too) or one without declared types (values keep
//! their type: an integer stays one); the CSV ends its lines with CRLF or LF. A cell is
//! absent (NULL, an empty CSV field), text (empty, with commas, quotes, line breaks, NUL),
//! an integer, or for `expiry_time` a decimal in text, spaces around it or not.
//!
//! Protects against the two importers drifting apart: a row one accepts and the other
//! rejects, a field one reads and the other drops or changes, rows in another order or
//! another number. The import saves the rows in order, so the same rows give the same
//! vault.
#![no_main]

use std::fs;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection};
use tokenvault::OAuthToken;
use tokenvault_fuzz::cli;
use tokenvault_fuzz::{process_dir, sdk_csv};

const MAX_TOKENS: usize = 32;
const EXPIRY: usize = 7;
/// The SQL stores' spelling of the columns.
const SQL_COLUMNS: [&str; 10] = [
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
/// Values that collide, and that the CSV must quote.
const POOL: [&str; 8] = [
    "1",
    "a,b",
    "say \"hi\"",
    "two\r\nlines",
    "\0",
    "ü🔑",
    " 42 ",
    "-0",
];

#[derive(Arbitrary, Debug, Clone)]
enum Cell {
    Absent,
    Empty,
    Pool(u8),
    Text(String),
    Int(i64),
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// The SDK's schema (else one without declared types).
    sdk_schema: bool,
    csv_order: u64,
    sql_order: u64,
    crlf: bool,
    tokens: Vec<[Cell; 10]>,
}

impl Cell {
    /// The value as SQLite is given it.
    fn sql(&self) -> Value {
        match self {
            Cell::Absent => Value::Null,
            Cell::Empty => Value::Text(String::new()),
            Cell::Pool(i) => Value::Text(POOL[usize::from(*i) % POOL.len()].to_owned()),
            Cell::Text(s) => Value::Text(s.clone()),
            Cell::Int(n) => Value::Integer(*n),
        }
    }

    /// The CSV field (an integer in decimal, as SQLite's text affinity writes it).
    fn csv(&self) -> String {
        match self.sql() {
            Value::Null => String::new(),
            Value::Text(s) => s,
            Value::Integer(n) => n.to_string(),
            other => unreachable!("{other:?}"),
        }
    }
}

fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| process_dir("import_differential"))
}

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

/// Writes the SQLite file; returns the tokens it holds (those whose insert succeeded).
fn write_sqlite(path: &Path, input: &Input) -> Vec<[Cell; 10]> {
    for suffix in ["", "-journal"] {
        let _ = fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let conn = Connection::open(path).expect("create the database");
    let order = permutation(input.sql_order);
    let columns: Vec<String> = order
        .iter()
        .map(|&c| match (input.sdk_schema, c) {
            (false, _) => SQL_COLUMNS[c].to_owned(),
            (true, 0) => "id varchar(10) primary key".to_owned(),
            (true, EXPIRY) => "expiry_time varchar(20)".to_owned(),
            (true, _) => format!("{} varchar(255)", SQL_COLUMNS[c]),
        })
        .collect();
    conn.execute_batch(&format!("create table oauthtoken({})", columns.join(", ")))
        .expect("create the table");
    let insert = format!(
        "insert into oauthtoken ({}) values ({})",
        order.map(|c| SQL_COLUMNS[c]).join(", "),
        ["?"; 10].join(", ")
    );
    conn.execute_batch("PRAGMA synchronous = OFF; BEGIN")
        .expect("begin");
    let mut kept = Vec::new();
    for cells in input.tokens.iter().take(MAX_TOKENS) {
        let values = order.map(|c| cells[c].sql());
        match conn.execute(&insert, params_from_iter(values)) {
            Ok(_) => kept.push(cells.clone()),
            // Only the primary key refuses a row: a duplicate id.
            Err(e) => assert!(
                input.sdk_schema,
                "a row refused by a table without constraints: {e}"
            ),
        }
    }
    conn.execute_batch("COMMIT").expect("commit");
    conn.close().expect("close the database");
    kept
}

fn write_csv(path: &Path, input: &Input, tokens: &[[Cell; 10]]) {
    let order = permutation(input.csv_order);
    let eol = if input.crlf { "\r\n" } else { "\n" };
    let mut out = Vec::new();
    sdk_csv::write_record(&mut out, order.map(|c| sdk_csv::HEADER[c]), eol);
    for cells in tokens {
        let fields = order.map(|c| cells[c].csv());
        sdk_csv::write_record(&mut out, fields.iter().map(String::as_str), eol);
    }
    fs::write(path, out).expect("write the CSV file");
}

/// The rows of an import: each token, or `None` for a rejected row.
fn import(path: &Path) -> Vec<Option<OAuthToken>> {
    let store = cli::import(path).unwrap_or_else(|f| panic!("{} refused: {f}", path.display()));
    let mut rows = Vec::with_capacity(store.rows());
    store
        .for_each_row(|row| {
            rows.push(row.token.ok());
            ControlFlow::Continue(())
        })
        .unwrap_or_else(|f| panic!("{} could not be read again: {f}", path.display()));
    rows
}

/// The token the cells were written for: empty text is absent; the expiry is a decimal
/// integer, spaces around it allowed; `None` if the row cannot be a token.
fn expected(cells: &[Cell; 10]) -> Option<OAuthToken> {
    let mut token = OAuthToken::default();
    for (c, cell) in cells.iter().enumerate() {
        if let (EXPIRY, Cell::Int(n)) = (c, cell) {
            token.set_expiry_time(Some(*n));
            continue;
        }
        let text = cell.csv();
        if text.is_empty() {
            continue;
        }
        match c {
            0 => token.set_id(Some(text)),
            1 => token.set_user_name(Some(text)),
            2 => token.set_client_id(Some(text)),
            3 => token.set_client_secret(Some(text)),
            4 => token.set_refresh_token(Some(text)),
            5 => token.set_access_token(Some(text)),
            6 => token.set_grant_token(Some(text)),
            EXPIRY => token.set_expiry_time(Some(text.trim().parse().ok()?)),
            8 => token.set_redirect_url(Some(text)),
            _ => token.set_api_domain(Some(text)),
        }
    }
    Some(token)
}

fuzz_target!(|input: Input| {
    let sqlite = dir().join("oauthtoken.db");
    let csv = dir().join("sdk_tokens.txt");
    let tokens = write_sqlite(&sqlite, &input);
    write_csv(&csv, &input, &tokens);
    let from_sqlite = import(&sqlite);
    let from_csv = import(&csv);
    assert_eq!(
        from_sqlite.len(),
        tokens.len(),
        "rows read from SQLite vs rows written"
    );
    assert_eq!(
        from_csv.len(),
        tokens.len(),
        "rows read from the CSV vs rows written"
    );
    for (i, ((s, c), cells)) in from_sqlite.iter().zip(&from_csv).zip(&tokens).enumerate() {
        let n = i + 1;
        assert!(
            s.is_some() == c.is_some(),
            "row {n}: one importer rejects it, the other not"
        );
        assert!(s == c, "row {n}: the importers read different tokens");
        assert!(*s == expected(cells), "row {n}: not the token written: {cells:?}");
    }
});
