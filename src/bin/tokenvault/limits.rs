//! The caps on what the command line reads: every input is untrusted, so each is bounded
//! before it is buffered further, and a cap that is hit is an error naming where.
//!
//! Invariant: memory stays bounded by these numbers, whatever the input: a cap is checked
//! as the input is read, never after everything has been parsed.

/// The longest value (a field, a cell, a secret read for `find`): 4 MiB. Token values of
/// 1 MiB and more are legal; 4 MiB is well above any real token.
pub const MAX_FIELD_BYTES: usize = 4 * 1024 * 1024;
/// How [`MAX_FIELD_BYTES`] reads in messages.
pub const MAX_FIELD_TEXT: &str = "4 MiB";

// A 1 MiB token value must import, and a field never exceeds a record.
const _: () = assert!(MAX_FIELD_BYTES >= 1024 * 1024 && MAX_FIELD_BYTES < MAX_RECORD_BYTES);

/// The longest CSV record (one logical line, quoted line breaks included): 16 MiB, the
/// most a vault record holds.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// The most rows one import reads, and the most tokens one `save` takes.
pub const MAX_ROWS: usize = 1_000_000;

/// The most `save` reads from stdin.
pub const MAX_STDIN_BYTES: usize = 256 * 1024 * 1024;

/// The largest CSV file imported (it is held in memory while it is checked and imported).
pub const MAX_CSV_BYTES: usize = 1024 * 1024 * 1024;

/// A count with thousands separators, as messages show caps: `1,000,000`.
pub fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(MAX_ROWS), "1,000,000");
        assert_eq!(grouped(MAX_ROWS + 1), "1,000,001");
        assert_eq!(grouped(12_345_678), "12,345,678");
    }

    #[test]
    fn the_field_cap_reads_as_it_is() {
        assert_eq!(MAX_FIELD_TEXT, format!("{} MiB", MAX_FIELD_BYTES >> 20));
    }
}
