//! How tokens and reports are shown: human text (a field list, a table) or JSON.
//!
//! Invariants: every field [`Field::is_secret`] names is shown as `[REDACTED]` unless the
//! caller asked to reveal it, and [`shown`] is the one place that applies this; human
//! output escapes control characters, so a stored value cannot drive the terminal; JSON
//! uses the token's field names ([`Field::name`]) and omits absent fields; output is built
//! in a [`SecretBuf`] (wiped, and never left behind by growth), and values are escaped as
//! they are written, never through a copy.

use std::fmt::{self, Write as _};

use serde::ser::{Serialize, SerializeMap, Serializer};
use tokenvault::{Field, FieldValue, OAuthToken};
use zeroize::Zeroizing;

use crate::secret_buf::SecretBuf;

/// What a secret is shown as unless revealed.
pub const REDACTED: &str = "[REDACTED]";

/// Output text, zeroized on drop (it may hold revealed secrets).
pub type Text = Zeroizing<String>;

/// The value of `field` as output shows it: a secret is [`REDACTED`] unless `reveal`.
fn shown(token: &OAuthToken, field: Field, reveal: bool) -> Option<FieldValue<'_>> {
    let value = token.get(field)?;
    if field.is_secret() && !reveal {
        Some(FieldValue::Text(REDACTED))
    } else {
        Some(value)
    }
}

/// A token as JSON, secrets redacted unless revealed: every present field, by its name, in
/// the token's order.
pub struct TokenJson<'a> {
    token: &'a OAuthToken,
    reveal: bool,
}

impl<'a> TokenJson<'a> {
    /// The JSON form of `token`.
    pub fn new(token: &'a OAuthToken, reveal: bool) -> Self {
        TokenJson { token, reveal }
    }
}

impl Serialize for TokenJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for field in Field::ALL {
            match shown(self.token, field, self.reveal) {
                Some(FieldValue::Text(v)) => map.serialize_entry(field.name(), v)?,
                Some(FieldValue::Millis(ms)) => map.serialize_entry(field.name(), &ms)?,
                None => {}
            }
        }
        map.end()
    }
}

/// Pretty JSON, ending in a newline.
pub fn json(value: &impl Serialize) -> Text {
    let mut out = SecretBuf::with_capacity(4096);
    // Serializing strings and numbers into memory cannot fail.
    if serde_json::to_writer_pretty(&mut out, value).is_err() {
        out.truncate(0);
        out.push(b"null");
    }
    out.push(b"\n");
    into_text(out)
}

/// The text written into `out` (always UTF-8: only `str`s are written to it).
fn into_text(out: SecretBuf) -> Text {
    out.into_text().unwrap_or_default()
}

/// Every token, as a JSON array.
pub fn tokens_json(tokens: &[OAuthToken], reveal: bool) -> Text {
    let view: Vec<TokenJson<'_>> = tokens.iter().map(|t| TokenJson::new(t, reveal)).collect();
    json(&view)
}

/// One token as an aligned field list.
pub fn token_text(token: &OAuthToken, reveal: bool) -> Text {
    let mut out = SecretBuf::with_capacity(1024);
    for field in Field::ALL {
        let name = field.name();
        let _ = match shown(token, field, reveal) {
            Some(FieldValue::Text(v)) => writeln!(out, "{name:<14} {}", Escaped(v)),
            Some(FieldValue::Millis(ms)) => writeln!(out, "{name:<14} {ms} ({})", utc(ms)),
            None => writeln!(out, "{name:<14} -"),
        };
    }
    into_text(out)
}

/// The table's columns: a header and the field shown under it.
const TABLE: [(&str, Field); 8] = [
    ("ID", Field::Id),
    ("USER NAME", Field::UserName),
    ("CLIENT ID", Field::ClientId),
    ("EXPIRES (UTC)", Field::ExpiryTime),
    ("CLIENT SECRET", Field::ClientSecret),
    ("REFRESH TOKEN", Field::RefreshToken),
    ("ACCESS TOKEN", Field::AccessToken),
    ("GRANT TOKEN", Field::GrantToken),
];

/// Every token as a table, one row each.
pub fn tokens_table(tokens: &[OAuthToken], reveal: bool) -> Text {
    if tokens.is_empty() {
        return Zeroizing::new("No tokens.\n".to_owned());
    }
    let header = TABLE.map(|(h, _)| h);
    let rows: Vec<[Cell<'_>; 8]> = tokens
        .iter()
        .map(|t| TABLE.map(|(_, field)| cell(shown(t, field, reveal))))
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row.iter()) {
            *width = (*width).max(cell.width());
        }
    }
    let mut out = SecretBuf::with_capacity(4096);
    let mut line = |cells: &mut dyn Iterator<Item = Escaped<'_>>| {
        let start = out.len();
        for (cell, width) in cells.zip(widths) {
            let _ = write!(out, "{cell}");
            for _ in cell.width()..width + 2 {
                out.push(b" ");
            }
        }
        // Trailing blanks go, as `str::trim_end` would take them.
        let kept = std::str::from_utf8(out.as_bytes().get(start..).unwrap_or_default())
            .map_or(0, |line| line.trim_end().len());
        out.truncate(start + kept);
        out.push(b"\n");
    };
    line(&mut header.iter().map(|h| Escaped(h)));
    for row in &rows {
        line(&mut row.iter().map(Cell::shown));
    }
    into_text(out)
}

/// A table cell: a value from the token (borrowed, never copied) or a formatted time.
enum Cell<'a> {
    Value(&'a str),
    Time(String),
}

fn cell(value: Option<FieldValue<'_>>) -> Cell<'_> {
    match value {
        Some(FieldValue::Text(v)) => Cell::Value(v),
        Some(FieldValue::Millis(ms)) => Cell::Time(utc(ms)),
        None => Cell::Value("-"),
    }
}

impl Cell<'_> {
    fn shown(&self) -> Escaped<'_> {
        match self {
            Cell::Value(v) => Escaped(v),
            Cell::Time(t) => Escaped(t),
        }
    }

    fn width(&self) -> usize {
        self.shown().width()
    }
}

/// A value made safe for a terminal, written without a copy: control characters escaped.
#[derive(Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl Escaped<'_> {
    /// The characters it shows.
    pub fn width(self) -> usize {
        self.0
            .chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().count()
                } else {
                    1
                }
            })
            .sum()
    }
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                for e in c.escape_default() {
                    f.write_char(e)?;
                }
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// Milliseconds since the Unix epoch as an ISO 8601 UTC time.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, day_secs) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days; exact for every i64 input (no overflow: |days| < 2^47).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        day_secs / 3600,
        day_secs % 3600 / 60,
        day_secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> OAuthToken {
        OAuthToken::default()
            .with_id("id-1")
            .with_user_name("alice\x1b[31m@example.com")
            .with_client_secret("SECRET-client")
            .with_refresh_token("SECRET-refresh")
            .with_expiry_time(1_764_000_000_000)
    }

    #[test]
    fn secrets_are_redacted_unless_revealed() {
        let shown = [
            token_text(&token(), false),
            tokens_table(&[token()], false),
            tokens_json(&[token()], false),
        ];
        for text in &shown {
            assert!(!text.contains("SECRET-"), "{}", text.as_str());
            assert!(text.contains(REDACTED), "{}", text.as_str());
        }
        assert!(token_text(&token(), true).contains("SECRET-refresh"));
        assert!(tokens_json(&[token()], true).contains("SECRET-client"));
    }

    /// A token with every field present, each text field holding `value-of-<name>`.
    fn every_field() -> OAuthToken {
        let mut t = OAuthToken::default().with_expiry_time(1_764_000_000_000);
        for field in Field::ALL {
            if field != Field::ExpiryTime {
                t.set_text(field, Some(marker(field))).unwrap();
            }
        }
        t
    }

    fn marker(field: Field) -> String {
        match field {
            Field::ExpiryTime => "1764000000000".to_owned(),
            _ => format!("value-of-{}", field.name()),
        }
    }

    #[test]
    fn every_field_is_shown_unless_it_is_secret_and_not_revealed() {
        let t = every_field();
        let all = Field::ALL.to_vec();
        let in_table: Vec<Field> = TABLE.iter().map(|(_, f)| *f).collect();
        let one = std::slice::from_ref(&t);
        let outputs = [
            ("text", &all, token_text(&t, false), token_text(&t, true)),
            ("json", &all, tokens_json(one, false), tokens_json(one, true)),
            (
                "table",
                &in_table,
                tokens_table(one, false),
                tokens_table(one, true),
            ),
        ];
        for (what, fields, redacted, revealed) in &outputs {
            let secrets = fields.iter().filter(|f| f.is_secret()).count();
            assert_eq!(
                redacted.matches(REDACTED).count(),
                secrets,
                "{what}: {}",
                redacted.as_str()
            );
            assert!(!revealed.contains(REDACTED), "{what}: {}", revealed.as_str());
            for field in fields.iter() {
                let value = match (*what, field) {
                    ("table", Field::ExpiryTime) => utc(1_764_000_000_000),
                    _ => marker(*field),
                };
                assert_eq!(
                    redacted.contains(&value),
                    !field.is_secret(),
                    "{what}, {field:?}: {}",
                    redacted.as_str()
                );
                assert!(
                    revealed.contains(&value),
                    "{what}, {field:?}: {}",
                    revealed.as_str()
                );
            }
        }
    }

    #[test]
    fn human_output_escapes_control_characters() {
        assert!(!token_text(&token(), false).contains('\x1b'));
        assert!(!tokens_table(&[token()], false).contains('\x1b'));
        assert!(tokens_json(&[token()], false).contains("\\u001b"));
    }

    #[test]
    fn json_uses_the_contract_field_names_and_omits_absent_fields() {
        let text = tokens_json(&[OAuthToken::default().with_id("x").with_expiry_time(5)], true);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value, serde_json::json!([{"id": "x", "expiry_time": 5}]));
    }

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_764_000_000_000), "2025-11-24T16:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59Z");
        let _ = (utc(i64::MAX), utc(i64::MIN));
    }
}
