//! sled's log read as bytes: its messages, found by their framing and checked by their
//! CRC32, and a changed message's CRC recomputed (a forgery). Shared by the tests of
//! damaged sled files and by the `sled_log` fuzz target (`fuzz/fuzz_targets/sled_log.rs`
//! includes this file), so both read the log one way.
//!
//! A message: a CRC32 (4 bytes), its kind (1 byte), then sled's variable-length integers
//! for the body's length, the segment number and the page id, then the body. The CRC
//! covers the body, then the header after the CRC.

/// sled's variable-length integer at `at`: its value and length.
pub(crate) fn varint(b: &[u8], at: usize) -> Option<(u64, usize)> {
    let first = *b.get(at)?;
    Some(match first {
        0..=240 => (u64::from(first), 1),
        241..=248 => (
            240 + 256 * (u64::from(first) - 241) + u64::from(*b.get(at + 1)?),
            2,
        ),
        249 => (
            2288 + 256 * u64::from(*b.get(at + 1)?) + u64::from(*b.get(at + 2)?),
            3,
        ),
        _ => {
            let n = usize::from(first) - 247;
            let mut le = [0u8; 8];
            le[..n].copy_from_slice(b.get(at + 1..at + 1 + n)?);
            (u64::from_le_bytes(le), n + 1)
        }
    })
}

/// A message of sled's log: where its header starts, where its body starts and ends.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Message {
    pub(crate) header: usize,
    pub(crate) body: usize,
    pub(crate) end: usize,
}

/// sled's kind of a message holding a whole node.
#[allow(dead_code, reason = "not every file including this module forges nodes")]
pub(crate) const INLINE_NODE: u8 = 8;

/// The CRC sled keeps for a message: over the body, then the header after the CRC.
pub(crate) fn crc(b: &[u8], m: &Message) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&b[m.body..m.end]);
    h.update(&b[m.header + 4..m.body]);
    h.finalize() ^ 0xFFFF_FFFF
}

/// The message whose header starts at `header`, if a message with a body and the right
/// CRC starts there.
pub(crate) fn message_at(b: &[u8], header: usize) -> Option<Message> {
    let mut i = header + 5;
    let (len, n) = varint(b, i)?;
    i += n;
    i += varint(b, i)?.1;
    i += varint(b, i)?.1;
    let m = Message {
        header,
        body: i,
        end: i.checked_add(usize::try_from(len).ok()?)?,
    };
    let stored = u32::from_le_bytes(b.get(header..header + 4)?.try_into().ok()?);
    (len > 0 && m.end <= b.len() && crc(b, &m) == stored).then_some(m)
}

/// Every message of the log, in order.
pub(crate) fn messages(b: &[u8]) -> Vec<Message> {
    let mut found = Vec::new();
    let mut at = 0;
    while at < b.len() {
        match message_at(b, at) {
            Some(m) => {
                at = m.end;
                found.push(m);
            }
            None => at += 1,
        }
    }
    found
}

/// Makes `m`'s CRC match its bytes again, as whoever changed them can.
pub(crate) fn forge(b: &mut [u8], m: &Message) {
    let c = crc(b, m);
    b[m.header..m.header + 4].copy_from_slice(&c.to_le_bytes());
}
