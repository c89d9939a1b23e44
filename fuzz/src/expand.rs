//! Inputs larger than the fuzzer's own: the caps of the command line's parsers (a 4 MiB
//! field, a 16 MiB record, 1,000,000 rows or tokens) lie far past libFuzzer's input length,
//! so an input may ask for parts of itself to be repeated.
//!
//! An input that starts with [`MAGIC`] is read as a run of segments, each
//! `times: u32 LE, len: u16 LE, bytes` (the last may be cut short), and stands for each
//! segment's bytes `times` times, in order; a segment whose repetitions would take the
//! whole past [`MAX_EXPANDED`] bytes is left out (so a mutation that makes `times` huge
//! costs nothing, rather than an input at the limit every time). Any other input stands
//! for itself.

use std::borrow::Cow;

/// The first bytes of an input made of repeated segments (never the start of valid UTF-8,
/// so no CSV or JSON input the parsers accept is lost to it).
pub const MAGIC: &[u8; 4] = b"\xffRPT";

/// The largest input the repetitions make: past every cap (five 4 MiB fields make a
/// record over the 16 MiB record cap; 1,000,001 empty rows take 10 bytes each).
pub const MAX_EXPANDED: usize = 24 * 1024 * 1024;

/// The bytes `data` stands for.
pub fn expand(data: &[u8]) -> Cow<'_, [u8]> {
    let Some(mut rest) = data.strip_prefix(MAGIC) else {
        return Cow::Borrowed(data);
    };
    let mut out = Vec::new();
    while !rest.is_empty() {
        let mut head = [0u8; 6];
        let n = head.len().min(rest.len());
        head[..n].copy_from_slice(&rest[..n]);
        rest = &rest[n..];
        let times = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let len = usize::from(u16::from_le_bytes([head[4], head[5]])).min(rest.len());
        let (bytes, later) = rest.split_at(len);
        rest = later;
        if bytes.is_empty() {
            continue;
        }
        if times > (MAX_EXPANDED - out.len()) / bytes.len() {
            continue;
        }
        out.reserve(times * bytes.len());
        for _ in 0..times {
            out.extend_from_slice(bytes);
        }
    }
    Cow::Owned(out)
}

/// The input that [`expand`]s to each `(bytes, times)` of `segments` in turn (for seeds).
///
/// # Panics
/// If a segment is longer than 65,535 bytes.
pub fn segments(segments: &[(&[u8], u32)]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for (bytes, times) in segments {
        let len = u16::try_from(bytes.len()).expect("a segment under 64 KiB");
        out.extend_from_slice(&times.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_without_the_magic_stands_for_itself() {
        assert_eq!(&*expand(b"id,user_name"), b"id,user_name");
        assert_eq!(&*expand(b""), b"");
        assert_eq!(&*expand(b"\xffRP"), b"\xffRP");
    }

    #[test]
    fn segments_repeat_in_order_up_to_the_limit() {
        let input = segments(&[(b"h\n", 1), (b"ab", 3), (b"", 5), (b"t", 1)]);
        assert_eq!(&*expand(&input), b"h\nabababt");
        let fill = u32::try_from((MAX_EXPANDED - 7) / 2).unwrap();
        let input = segments(&[(b"x", 7), (b"yz", fill), (b"left out", 1), (b"?", 1)]);
        let big = expand(&input);
        assert_eq!(big.len(), MAX_EXPANDED);
        assert!(big.starts_with(b"xxxxxxxyzyz") && big.ends_with(b"yz?"));
        let input = segments(&[(b"x", 7), (b"yz", u32::MAX), (b"!", 1)]);
        assert_eq!(&*expand(&input), b"xxxxxxx!");
        // A segment cut short takes what there is.
        assert_eq!(&*expand(b"\xffRPT\x02\0\0\0\x05\0ab"), b"abab");
        assert_eq!(&*expand(b"\xffRPT\x02\0"), b"");
    }
}
