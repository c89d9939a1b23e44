//! How tokens and reports are shown: human text (a field list, a table) or JSON.
//!
//! Invariants: a secret field (client secret, grant, refresh and access tokens) is shown
//! as `[REDACTED]` unless the caller asked to reveal it; human output escapes control
//! characters, so a stored value cannot drive the terminal; JSON uses the token field
//! names of docs/design.md section 2 and omits absent fields; output is built in a
//! [`SecretBuf`] (wiped, and never left behind by growth), and values are escaped as they
//! are written, never through a copy.

use std::fmt::{self, Write as _};

use serde::Serialize;
use tokenvault::OAuthToken;
use zeroize::Zeroizing;

use crate::secret_buf::SecretBuf;

/// What a secret is shown as unless revealed.
pub const REDACTED: &str = "[REDACTED]";

/// Output text, zeroized on drop (it may hold revealed secrets).
pub type Text = Zeroizing<String>;

/// A token as JSON, secrets redacted unless revealed.
#[derive(Serialize)]
pub struct TokenJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grant_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiry_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redirect_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_domain: Option<&'a str>,
}

impl<'a> TokenJson<'a> {
    /// The JSON form of `token`.
    pub fn new(token: &'a OAuthToken, reveal: bool) -> Self {
        let secret = |v: Option<&'a str>| v.map(|s| if reveal { s } else { REDACTED });
        TokenJson {
            id: token.id(),
            user_name: token.user_name(),
            client_id: token.client_id(),
            client_secret: secret(token.client_secret()),
            refresh_token: secret(token.refresh_token()),
            access_token: secret(token.access_token()),
            grant_token: secret(token.grant_token()),
            expiry_time: token.expiry_time(),
            redirect_url: token.redirect_url(),
            api_domain: token.api_domain(),
        }
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
    let j = TokenJson::new(token, reveal);
    let expiry = j.expiry_time.map(|ms| format!("{ms} ({})", utc(ms)));
    let fields = [
        ("id", j.id),
        ("user_name", j.user_name),
        ("client_id", j.client_id),
        ("client_secret", j.client_secret),
        ("refresh_token", j.refresh_token),
        ("access_token", j.access_token),
        ("grant_token", j.grant_token),
        ("expiry_time", expiry.as_deref()),
        ("redirect_url", j.redirect_url),
        ("api_domain", j.api_domain),
    ];
    let mut out = SecretBuf::with_capacity(1024);
    for (name, value) in fields {
        let _ = writeln!(out, "{name:<14} {}", Escaped(value.unwrap_or("-")));
    }
    into_text(out)
}

/// Every token as a table, one row each.
pub fn tokens_table(tokens: &[OAuthToken], reveal: bool) -> Text {
    if tokens.is_empty() {
        return Zeroizing::new("No tokens.\n".to_owned());
    }
    let header = [
        "ID",
        "USER NAME",
        "CLIENT ID",
        "EXPIRES (UTC)",
        "CLIENT SECRET",
        "REFRESH TOKEN",
        "ACCESS TOKEN",
        "GRANT TOKEN",
    ];
    let rows: Vec<[Cell<'_>; 8]> = tokens
        .iter()
        .map(|t| {
            let j = TokenJson::new(t, reveal);
            [
                cell(j.id),
                cell(j.user_name),
                cell(j.client_id),
                Cell::Time(j.expiry_time.map_or_else(|| "-".to_owned(), utc)),
                cell(j.client_secret),
                cell(j.refresh_token),
                cell(j.access_token),
                cell(j.grant_token),
            ]
        })
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

fn cell(value: Option<&str>) -> Cell<'_> {
    Cell::Value(value.unwrap_or("-"))
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
