//! The journal of a durable redb vault: the file `vault.redb-journal` beside `vault.redb`
//! (docs/format.md, "The redb journal").
//!
//! redb makes a commit durable by writing every page the commit copied and `fdatasync`ing
//! the file: for one saved token about twenty 4 KiB pages (six keys at random places of the
//! B-tree, the branches above them, redb's freed-page table and header). A durable vault on
//! redb instead commits each batch without `fdatasync`, writes what the batch wrote (its
//! puts, removes and clears, a frame of about the batch's own size) to this file and
//! `fdatasync`s the journal. Every [`CHECKPOINT_FRAMES`] frames (or once the frames reach
//! [`CHECKPOINT_BYTES`]), before a batch too large for a frame, and when the last handle
//! closes, one durable redb commit covers everything the journal holds, and the journal is
//! emptied. Opening a vault replays what its journal holds into redb, with one durable
//! commit, and empties it.
//!
//! The file keeps its blocks: frames are written into space that earlier frames used,
//! from the start again after each checkpoint, so that most `fdatasync`s change no file
//! size and no block map (on Linux file systems an append's `fdatasync` also commits the
//! file's new size). Frames start on 4 KiB boundaries and carry the journal's *epoch*,
//! which each checkpoint moves on (in one of two header slots, written in turn): a frame of
//! an earlier epoch is not part of the journal. A checkpoint zeroes the frames it covered
//! once the new epoch is durable, so the journal does not keep what was removed.
//!
//! Replaying is correct because every frame's writes are blind (a put or remove of a whole
//! value, never read-modify-write) and every commit between two checkpoints is in the
//! journal, in order: redb's file comes back after a crash at its last durable commit
//! (a checkpoint, or one from before the frames that a checkpoint interrupted by the crash
//! already covered), and replaying every frame in order from there reaches the state of
//! the last frame.
//!
//! A crash can leave only the frame being written incomplete (frames are written one at a
//! time, each `fdatasync`ed before the next starts, at increasing offsets within an
//! epoch). So the journal ends at the first frame that does not verify; a frame of the
//! current epoch (or a later one) after that one means damage, and is `Corrupted` (the
//! vault does not open until the journal is dealt with), never a silent loss of
//! acknowledged writes. A journal of the first format (frames appended from the start of
//! the file, no header, no epoch) is still read, and replaced after its replay.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::{Op, TreeName};
use crate::Error;

/// The journal's file name, beside the redb file.
pub(crate) const JOURNAL_FILE: &str = "vault.redb-journal";

/// The most frames between two checkpoints.
pub(crate) const CHECKPOINT_FRAMES: u64 = 1024;

/// No frame starts at or past this offset of the frame area: a checkpoint comes first.
pub(crate) const CHECKPOINT_BYTES: u64 = 4 * 1024 * 1024;

/// The largest frame (header included). A batch whose frame would be larger is committed
/// durably by redb itself, after a checkpoint.
pub(crate) const MAX_FRAME: usize = 64 * 1024;

/// A frame's header: the body's length (u32 LE) and a CRC-32 of the length and the body
/// (u32 LE).
const FRAME_HEADER: usize = 8;

/// Frames start at multiples of this (from the start of the frame area), and each header
/// takes one.
pub(crate) const SLOT: usize = 4096;

/// The two header slots, before the frame area.
pub(crate) const HEADERS: usize = 2 * SLOT;

/// The first bytes of a header: never the start of a first-format journal, whose first
/// four bytes are a frame's length (at most 65,528; these read as 1,380,603,476).
pub(crate) const MAGIC: [u8; 8] = *b"TVJRNL\x00\x02";

/// A header's bytes that are not zero: the magic, the epoch (u64 LE) and a CRC-32 of both
/// (u32 LE).
const HEADER_BYTES: usize = 20;

/// The longest frame area: a frame starts below [`CHECKPOINT_BYTES`].
const MAX_AREA: u64 = CHECKPOINT_BYTES + MAX_FRAME as u64;

/// The longest journal this code writes, or wrote in the first format (whose longest is
/// [`MAX_AREA`]).
const MAX_JOURNAL: u64 = HEADERS as u64 + MAX_AREA;

const PUT: u8 = 0;
const REMOVE: u8 = 1;
const CLEAR: u8 = 2;

fn damaged(what: &str) -> Error {
    Error::corrupted(format!(
        "the redb journal ({JOURNAL_FILE}) is damaged: {what}; the vault does not open while it \
         holds writes that cannot be read back"
    ))
}

fn push_len(out: &mut Vec<u8>, len: usize) -> Option<()> {
    out.extend_from_slice(&u32::try_from(len).ok()?.to_le_bytes());
    Some(())
}

/// The CRC-32 of a frame: over its length field and its body.
fn checksum(len: &[u8], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(body);
    h.finalize()
}

/// `n` rounded up to a whole number of slots.
fn slots(n: usize) -> usize {
    n.div_ceil(SLOT).saturating_mul(SLOT)
}

/// The frame of batch number `seq` (1 for the first frame of an epoch) in epoch `epoch`,
/// `ops`; `None` when it would be longer than [`MAX_FRAME`].
pub(crate) fn encode(epoch: u64, seq: u64, ops: &[Op]) -> Option<Vec<u8>> {
    encode_numbered(&[epoch, seq], ops)
}

/// A frame of the first format (no epoch): what older versions appended.
#[cfg(any(test, fuzzing))]
pub(crate) fn encode_first_format(seq: u64, ops: &[Op]) -> Option<Vec<u8>> {
    encode_numbered(&[seq], ops)
}

/// A frame whose body starts with `numbers` (u64 LE each), then the writes.
fn encode_numbered(numbers: &[u64], ops: &[Op]) -> Option<Vec<u8>> {
    let numbers_len = 8 * numbers.len();
    // Summed with a stop at the limit: a batch of millions of writes is refused before
    // anything is allocated for it.
    let len = ops.iter().try_fold(FRAME_HEADER + numbers_len, |len, op| {
        Some(len + op_len(op)).filter(|&l| l <= MAX_FRAME)
    })?;
    let mut body = Vec::with_capacity(len - FRAME_HEADER);
    for n in numbers {
        body.extend_from_slice(&n.to_le_bytes());
    }
    for op in ops {
        match op {
            Op::Put(t, k, v) => {
                body.extend_from_slice(&[PUT, t.tag()]);
                push_len(&mut body, k.len())?;
                body.extend_from_slice(k);
                push_len(&mut body, v.len())?;
                body.extend_from_slice(v);
            }
            Op::Remove(t, k) => {
                body.extend_from_slice(&[REMOVE, t.tag()]);
                push_len(&mut body, k.len())?;
                body.extend_from_slice(k);
            }
            Op::Clear(t) => body.extend_from_slice(&[CLEAR, t.tag()]),
        }
        if FRAME_HEADER + body.len() > MAX_FRAME {
            return None;
        }
    }
    let len = u32::try_from(body.len()).ok()?.to_le_bytes();
    let mut frame = Vec::with_capacity(FRAME_HEADER + body.len());
    frame.extend_from_slice(&len);
    frame.extend_from_slice(&checksum(&len, &body).to_le_bytes());
    frame.extend_from_slice(&body);
    Some(frame)
}

fn op_len(op: &Op) -> usize {
    match op {
        Op::Put(_, k, v) => 10 + k.len() + v.len(),
        Op::Remove(_, k) => 6 + k.len(),
        Op::Clear(_) => 2,
    }
}

/// The header slot that holds `epoch`, as written: 4 KiB.
pub(crate) fn header(epoch: u64) -> Vec<u8> {
    let mut slot = Vec::with_capacity(SLOT);
    slot.extend_from_slice(&MAGIC);
    slot.extend_from_slice(&epoch.to_le_bytes());
    let crc = crc32fast::hash(&slot);
    slot.extend_from_slice(&crc.to_le_bytes());
    slot.resize(SLOT, 0);
    slot
}

/// The epoch a header slot holds, if it verifies.
fn header_epoch(slot: &[u8]) -> Option<u64> {
    let fields: &[u8; HEADER_BYTES] = slot.first_chunk()?;
    let (magic, rest) = fields.split_first_chunk::<8>()?;
    let (epoch, crc) = rest.split_first_chunk::<8>()?;
    let crc: &[u8; 4] = crc.try_into().ok()?;
    (*magic == MAGIC && crc32fast::hash(&fields[..16]) == u32::from_le_bytes(*crc))
        .then(|| u64::from_le_bytes(*epoch))
}

/// The offset of the header slot that `epoch` is written to.
fn header_offset(epoch: u64) -> u64 {
    (epoch % 2) * SLOT as u64
}

/// The journal's epoch: the larger of those its two header slots hold.
fn journal_epoch(headers: &[u8]) -> Option<u64> {
    [headers.get(..SLOT), headers.get(SLOT..HEADERS)]
        .map(|s| s.and_then(header_epoch))
        .into_iter()
        .flatten()
        .max()
}

/// Whether `bytes` are a journal of the current format: one of its header slots starts
/// with the magic (a crash may have torn the other).
fn is_current_format(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC) || bytes.get(SLOT..).is_some_and(|b| b.starts_with(&MAGIC))
}

/// A reader over a frame's body that refuses to read past it.
struct Body<'a>(&'a [u8]);

impl<'a> Body<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let (head, rest) = self
            .0
            .split_at_checked(n)
            .ok_or_else(|| damaged("a frame ends inside a write"))?;
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        self.take(N)?
            .try_into()
            .map_err(|_| damaged("a frame ends inside a write"))
    }

    fn bytes(&mut self) -> Result<Vec<u8>, Error> {
        let len = u32::from_le_bytes(self.array()?);
        let len = usize::try_from(len).map_err(|_| damaged("a length out of range"))?;
        Ok(self.take(len)?.to_vec())
    }
}

/// The writes of a verified body, after its numbers.
fn decode_writes(body: &[u8]) -> Result<Vec<Op>, Error> {
    let mut body = Body(body);
    let mut ops = Vec::new();
    while !body.0.is_empty() {
        let [kind, tag] = body.array()?;
        let tree = TreeName::from_tag(tag).ok_or_else(|| damaged("a write to an unknown tree"))?;
        ops.push(match kind {
            PUT => {
                let key = body.bytes()?;
                Op::Put(tree, key, body.bytes()?)
            }
            REMOVE => Op::Remove(tree, body.bytes()?),
            CLEAR => Op::Clear(tree),
            _ => return Err(damaged("a write of an unknown kind")),
        });
    }
    Ok(ops)
}

/// The body of the frame at the start of `rest` and the frame's length, if it verifies
/// (complete, and its checksum matches).
fn verified(rest: &[u8]) -> Option<(&[u8], usize)> {
    let (&[l0, l1, l2, l3, c0, c1, c2, c3], tail) = rest.split_first_chunk::<FRAME_HEADER>()?;
    let len = [l0, l1, l2, l3];
    let body_len = u32::from_le_bytes(len) as usize;
    if body_len > MAX_FRAME - FRAME_HEADER {
        return None;
    }
    let body = tail.get(..body_len)?;
    (checksum(&len, body) == u32::from_le_bytes([c0, c1, c2, c3])).then_some((body, FRAME_HEADER + body_len))
}

/// The frame at the start of `rest` if it verifies and its epoch is at least `min_epoch`:
/// its epoch, its number, its writes' bytes and its length. The epoch is looked at before
/// the checksum, so that the frames of earlier epochs cost no checksum.
fn frame_from(rest: &[u8], min_epoch: u64) -> Option<(u64, u64, &[u8], usize)> {
    let (_, after_header) = rest.split_first_chunk::<FRAME_HEADER>()?;
    let (found, _) = after_header.split_first_chunk::<8>()?;
    let epoch = u64::from_le_bytes(*found);
    if epoch < min_epoch {
        return None;
    }
    let (body, len) = verified(rest)?;
    let (_, after_epoch) = body.split_first_chunk::<8>()?;
    let (seq, writes) = after_epoch.split_first_chunk::<8>()?;
    Some((epoch, u64::from_le_bytes(*seq), writes, len))
}

/// A journal's content, read.
pub(crate) struct Decoded {
    /// The batches, in order.
    pub(crate) batches: Vec<Vec<Op>>,
    /// Where each batch's frame is in the file, and its length.
    pub(crate) frames: Vec<(usize, usize)>,
    /// The epoch, for a journal of the current format; `None` for the first format.
    pub(crate) epoch: Option<u64>,
    /// Whether the frame area holds anything but zeros (the first format: anything).
    pub(crate) dirty: bool,
}

/// The batches that `bytes`, a journal's content, holds, in order (see the module's
/// documentation for where a journal ends and what is damage).
pub(crate) fn decode(bytes: &[u8]) -> Result<Decoded, Error> {
    if bytes.len() as u64 > MAX_JOURNAL {
        return Err(damaged("it is longer than a journal can be"));
    }
    if is_current_format(bytes) {
        decode_current(bytes)
    } else {
        decode_first_format(bytes)
    }
}

fn decode_current(bytes: &[u8]) -> Result<Decoded, Error> {
    let epoch = journal_epoch(bytes).ok_or_else(|| damaged("neither of its headers verifies"))?;
    let area = bytes.get(HEADERS..).unwrap_or_default();
    let mut decoded = Decoded {
        batches: Vec::new(),
        frames: Vec::new(),
        epoch: Some(epoch),
        dirty: area.iter().any(|&b| b != 0),
    };
    let mut at = 0;
    while let Some((found, seq, writes, len)) = area.get(at..).and_then(|rest| frame_from(rest, epoch)) {
        if found != epoch {
            return Err(damaged("a frame is of a later epoch than its header's"));
        }
        if seq != decoded.batches.len() as u64 + 1 {
            return Err(damaged("frames out of sequence"));
        }
        decoded.batches.push(decode_writes(writes)?);
        decoded.frames.push((HEADERS + at, len));
        at += slots(len);
    }
    // The first frame that does not verify ends the journal: none of this epoch may follow
    // (frames are written in order, each durable before the next), nor any of a later one
    // (written only once its header was durable: that header is damaged).
    let mut later = at + SLOT;
    while let Some(rest) = area.get(later..).filter(|r| !r.is_empty()) {
        if frame_from(rest, epoch).is_some() {
            return Err(damaged(
                "a frame does not verify, and a later frame of its epoch or a later one does",
            ));
        }
        later += SLOT;
    }
    Ok(decoded)
}

fn decode_first_format(bytes: &[u8]) -> Result<Decoded, Error> {
    let mut decoded = Decoded {
        batches: Vec::new(),
        frames: Vec::new(),
        epoch: None,
        dirty: !bytes.is_empty(),
    };
    let mut at = 0;
    while let Some(rest) = bytes.get(at..).filter(|r| !r.is_empty()) {
        let seq = decoded.batches.len() as u64 + 1;
        match verified(rest) {
            Some((body, len)) => {
                let (found, writes) = body
                    .split_first_chunk::<8>()
                    .ok_or_else(|| damaged("a frame ends inside a write"))?;
                if u64::from_le_bytes(*found) != seq {
                    return Err(damaged("frames out of sequence"));
                }
                decoded.batches.push(decode_writes(writes)?);
                decoded.frames.push((at, len));
                at += len;
            }
            // The rest does not verify: the frame a crash interrupted, if it is no longer
            // than one frame can be.
            None if rest.len() <= MAX_FRAME => break,
            None => {
                return Err(damaged(
                    "a frame does not verify, and more follows than a crash can leave",
                ))
            }
        }
    }
    Ok(decoded)
}

/// Reads the journal at `path` (nothing when there is none).
pub(crate) fn read(path: &Path) -> Result<Decoded, Error> {
    let mut file = match open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return decode(&[]),
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(damaged("it is not a regular file"));
    }
    let len = meta.len();
    if len > MAX_JOURNAL {
        return Err(damaged("it is longer than a journal can be"));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    (&mut file).take(MAX_JOURNAL + 1).read_to_end(&mut bytes)?;
    decode(&bytes)
}

/// Opens the journal at `path` for reading and writing; never through a symbolic link.
fn open(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    options.open(path)
}

/// Puts a new, empty journal of epoch `epoch` at `path`, replacing what is there (owner-only,
/// never through a symbolic link), and makes it and its directory entry durable before any
/// frame is written: a frame's own `fdatasync` could otherwise make it durable with one
/// header slot and not the other, and a first-format journal replaced here could come back
/// after a crash and be replayed over newer state.
fn create(path: &Path, epoch: u64) -> Result<File, Error> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    let mut file = options.open(path)?;
    // A file that was there keeps its mode when opened: owner-only all the same.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    // Both slots hold a header, the other one the epoch before: one damaged byte in
    // either still leaves the file recognisably of this format.
    let mut headers = vec![0u8; HEADERS];
    for e in [epoch.saturating_sub(1), epoch] {
        let at = usize::try_from(header_offset(e)).unwrap_or(0);
        if let Some(slot) = headers.get_mut(at..at + SLOT) {
            slot.copy_from_slice(&header(e));
        }
    }
    file.write_all(&headers)?;
    file.sync_all()?;
    // A frame is durable only if the file holding it is found after a power loss.
    sync_parent(path)?;
    Ok(file)
}

/// The open journal of a durable handle.
pub(crate) struct Journal {
    file: File,
    /// The current epoch: the frames written since the last checkpoint carry it.
    epoch: u64,
    /// Frames in this epoch (the last frame's number).
    frames: u64,
    /// Where the next frame goes, in the frame area.
    at: u64,
    /// How much of the frame area this epoch has written (what a checkpoint zeroes).
    used: u64,
    /// Whether a write failed part-way: nothing is written again until a checkpoint has
    /// emptied the journal.
    failed: bool,
}

impl Journal {
    /// Opens the journal at `path` for a durable handle: the caller has replayed and
    /// emptied it ([`empty_file`]), so it holds no frame of its epoch and its frame area is
    /// zeros. Creates it when there is none (or an empty file of the first format).
    pub(crate) fn open(path: &Path) -> Result<Journal, Error> {
        let existing = match open(path) {
            Ok(file) => Some(file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let (file, epoch) = match existing {
            Some(mut file) => {
                let meta = file.metadata()?;
                if !meta.is_file() {
                    return Err(damaged("it is not a regular file"));
                }
                if meta.len() == 0 {
                    (create(path, 1)?, 1)
                } else {
                    let mut headers = Vec::with_capacity(HEADERS);
                    (&mut file).take(HEADERS as u64).read_to_end(&mut headers)?;
                    let epoch = is_current_format(&headers)
                        .then(|| journal_epoch(&headers))
                        .flatten()
                        .ok_or_else(|| {
                            Error::internal("the redb journal is opened for writing before it was emptied")
                        })?;
                    (file, epoch)
                }
            }
            None => (create(path, 1)?, 1),
        };
        Ok(Journal {
            file,
            epoch,
            frames: 0,
            at: 0,
            used: 0,
            failed: false,
        })
    }

    /// Whether a checkpoint must come before the next frame.
    pub(crate) fn full(&self) -> bool {
        self.failed || self.frames >= CHECKPOINT_FRAMES || self.at >= CHECKPOINT_BYTES
    }

    /// Whether it holds frames (or may, after a failed write).
    pub(crate) fn holds_frames(&self) -> bool {
        self.failed || self.frames > 0
    }

    /// The frame of the next batch, `ops`; `None` when it would be longer than
    /// [`MAX_FRAME`].
    pub(crate) fn frame(&self, ops: &[Op]) -> Option<Vec<u8>> {
        encode(self.epoch, self.frames + 1, ops)
    }

    /// Writes `frame` (made by [`frame`](Self::frame)) at its slot and makes it durable.
    pub(crate) fn append(&mut self, frame: &[u8]) -> Result<(), Error> {
        let offset = HEADERS as u64 + self.at;
        // Counted as used before it is written: a frame whose write fails part-way is
        // zeroed by the checkpoint all the same.
        self.used = self.used.max(self.at + slots(frame.len()) as u64);
        let written = self
            .file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.write_all(frame))
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            self.failed = true;
            return Err(e.into());
        }
        self.frames += 1;
        self.at += slots(frame.len()) as u64;
        Ok(())
    }

    /// Empties the journal durably, once redb holds everything it held durably: the next
    /// epoch's header, then zeros over what this epoch's frames used.
    pub(crate) fn empty(&mut self) -> Result<(), Error> {
        // Until this is done, nothing is written: a crash part-way leaves frames that redb
        // holds already (replayed again, to the same state), or frames of an earlier epoch.
        self.failed = true;
        let epoch = next_epoch(self.epoch)?;
        write_header(&mut self.file, epoch)?;
        self.epoch = epoch;
        zero_area(&mut self.file, self.used)?;
        self.frames = 0;
        self.at = 0;
        self.used = 0;
        self.failed = false;
        Ok(())
    }
}

fn next_epoch(epoch: u64) -> Result<u64, Error> {
    epoch
        .checked_add(1)
        .ok_or_else(|| Error::internal("the redb journal's epoch overflowed"))
}

/// Writes the header of `epoch` into its slot and makes it durable: from here on, the
/// frames of earlier epochs are not the journal's.
fn write_header(file: &mut File, epoch: u64) -> Result<(), Error> {
    file.seek(SeekFrom::Start(header_offset(epoch)))?;
    file.write_all(&header(epoch))?;
    file.sync_data()?;
    Ok(())
}

/// Zeroes the first `len` bytes of the frame area and makes that durable.
fn zero_area(file: &mut File, len: u64) -> Result<(), Error> {
    const CHUNK: usize = 64 * 1024;
    if len == 0 {
        return Ok(());
    }
    let zeros = [0u8; CHUNK];
    file.seek(SeekFrom::Start(HEADERS as u64))?;
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
        file.write_all(zeros.get(..n).unwrap_or_default())?;
        left -= n as u64;
    }
    file.sync_data()?;
    Ok(())
}

/// Makes the entry of `path` in its directory durable.
#[cfg(unix)]
fn sync_parent(path: &Path) -> Result<(), Error> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn sync_parent(_path: &Path) -> Result<(), Error> {
    Ok(())
}

/// Empties the journal file at `path`, if there is one, after its replay (`decoded` is
/// what it held): a journal of the current format moves to the next epoch and has its
/// frame area zeroed; one of the first format is replaced by an empty journal of the
/// current format.
pub(crate) fn empty_file(path: &Path, decoded: &Decoded) -> Result<(), Error> {
    match decoded.epoch {
        Some(epoch) => {
            if !decoded.dirty && decoded.batches.is_empty() {
                return Ok(());
            }
            let mut file = open(path)?;
            let len = file.metadata()?.len().saturating_sub(HEADERS as u64);
            write_header(&mut file, next_epoch(epoch)?)?;
            zero_area(&mut file, len)
        }
        None if decoded.dirty => create(path, 1).map(drop),
        None => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, reason = "test values are small")]
mod tests {
    use super::*;

    fn batch(i: u8) -> Vec<Op> {
        vec![
            Op::Put(TreeName::Tokens, vec![i; 16], vec![i ^ 0x5a; 300]),
            Op::Put(TreeName::User, vec![i; 32], vec![i; 16]),
            Op::Remove(TreeName::Access, vec![i.wrapping_add(1); 32]),
            Op::Clear(TreeName::Quarantine),
        ]
    }

    fn journal(n: u8) -> Vec<u8> {
        (0..n)
            .flat_map(|i| encode_first_format(u64::from(i) + 1, &batch(i)).unwrap())
            .collect()
    }

    fn same(a: &[Op], b: &[Op]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|pair| match pair {
                (Op::Put(t, k, v), Op::Put(u, l, w)) => t == u && k == l && v == w,
                (Op::Remove(t, k), Op::Remove(u, l)) => t == u && k == l,
                (Op::Clear(t), Op::Clear(u)) => t == u,
                _ => false,
            })
    }

    #[test]
    fn frames_decode_to_the_batches_they_were_made_of() {
        let batches = decode(&journal(5)).unwrap().batches;
        assert_eq!(batches.len(), 5);
        for (i, ops) in batches.iter().enumerate() {
            assert!(same(ops, &batch(i as u8)), "batch {i}");
        }
        assert!(decode(&[]).unwrap().batches.is_empty());
    }

    #[test]
    fn a_frame_is_laid_out_as_the_format_says() {
        let frame = encode_first_format(
            7,
            &[
                Op::Put(TreeName::User, vec![1, 2], vec![3]),
                Op::Clear(TreeName::Ids),
            ],
        )
        .unwrap();
        let body = [
            7, 0, 0, 0, 0, 0, 0, 0, // the sequence number
            0, 2, 2, 0, 0, 0, 1, 2, 1, 0, 0, 0, 3, // put, idx.user, key, value
            2, 6, // clear idx.id
        ];
        assert_eq!(&frame[..4], &(body.len() as u32).to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&frame[..4]);
        h.update(&body);
        assert_eq!(&frame[4..8], &h.finalize().to_le_bytes());
        assert_eq!(&frame[8..], &body);
    }

    #[test]
    fn an_end_cut_anywhere_in_the_last_frame_drops_only_that_frame() {
        let whole = journal(3);
        let two = journal(2).len();
        for cut in two..whole.len() {
            let batches = decode(&whole[..cut]).unwrap().batches;
            assert_eq!(batches.len(), 2, "cut at {cut}");
        }
        // The last frame's bytes zeroed (a file extended before its data was written).
        let mut zeroed = whole.clone();
        zeroed[two..].fill(0);
        assert_eq!(decode(&zeroed).unwrap().batches.len(), 2);
    }

    #[test]
    fn a_damaged_frame_with_more_after_it_than_one_frame_is_corrupted() {
        // Enough frames after the first that the rest is longer than one frame can be.
        let mut bytes: Vec<u8> = (0..250u8)
            .flat_map(|i| encode_first_format(u64::from(i) + 1, &batch(i)).unwrap())
            .collect();
        assert!(bytes.len() > MAX_FRAME + 400);
        bytes[20] ^= 1;
        assert!(matches!(decode(&bytes), Err(Error::Corrupted { .. })));
    }

    #[test]
    fn a_verified_frame_that_does_not_parse_is_corrupted() {
        let mut cases: Vec<Vec<u8>> = Vec::new();
        // An unknown tree, an unknown kind, a key longer than the frame, a wrong number.
        for body in [
            [&1u64.to_le_bytes()[..], &[CLEAR, 8]].concat(),
            [&1u64.to_le_bytes()[..], &[3, 1]].concat(),
            [&1u64.to_le_bytes()[..], &[REMOVE, 1, 9, 0, 0, 0, 1]].concat(),
            [&2u64.to_le_bytes()[..], &[CLEAR, 1]].concat(),
            vec![1, 0, 0],
        ] {
            let len = (body.len() as u32).to_le_bytes();
            let crc = checksum(&len, &body).to_le_bytes();
            cases.push([&len[..], &crc, &body].concat());
        }
        for case in cases {
            assert!(matches!(decode(&case), Err(Error::Corrupted { .. })), "{case:?}");
        }
    }

    /// The fuzz target's seeds were written by another encoder (Python's `zlib.crc32`)
    /// from docs/format.md alone: they decode as the format says.
    #[test]
    fn journals_written_from_the_format_document_decode() {
        let seed = |name: &str| {
            let path = format!("{}/fuzz/corpus/redb_journal/{name}", env!("CARGO_MANIFEST_DIR"));
            decode(&std::fs::read(path).unwrap()).unwrap().batches
        };
        let three = seed("save-delete-clear");
        assert_eq!(three.iter().map(Vec::len).collect::<Vec<_>>(), [5, 4, 2]);
        assert!(matches!(&three[0][4], Op::Put(TreeName::Meta, k, v) if k == b"seals" && v.len() == 16));
        assert!(matches!(&three[1][3], Op::Remove(TreeName::Ids, k) if k.len() == 32));
        assert!(matches!(three[2][0], Op::Clear(TreeName::Quarantine)));
        assert_eq!(seed("cut-last-frame").len(), 3);
        assert_eq!(seed("one-save").len(), 1);
        assert!(seed("empty-batch")[0].is_empty());
        // The current format: epoch 9 (slot 1, epoch 8 in slot 0), three frames.
        let current = seed("current-save-delete-clear");
        assert_eq!(current.iter().map(Vec::len).collect::<Vec<_>>(), [5, 4, 2]);
        assert!(matches!(&current[0][3], Op::Put(TreeName::Ids, k, v) if k.len() == 32 && v.len() == 64));
        assert!(matches!(current[2][1], Op::Clear(TreeName::Grant)));
        assert_eq!(
            seed("current-stale-after").len(),
            3,
            "a frame of epoch 8 after them"
        );
        assert_eq!(seed("current-cut-last-frame").len(), 2);
    }

    /// A journal of the current format: `headers` (epochs in slots 0 and 1, `None` for a
    /// slot of zeros), then each frame at its slot.
    fn current(headers: [Option<u64>; 2], frames: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes: Vec<u8> = headers
            .iter()
            .flat_map(|h| h.map_or_else(|| vec![0; SLOT], header))
            .collect();
        for frame in frames {
            bytes.extend_from_slice(frame);
            bytes.resize(slots(bytes.len()), 0);
        }
        bytes
    }

    fn frames_of(epoch: u64, batches: std::ops::Range<u8>) -> Vec<Vec<u8>> {
        batches
            .enumerate()
            .map(|(n, i)| encode(epoch, n as u64 + 1, &batch(i)).unwrap())
            .collect()
    }

    #[test]
    fn frames_of_the_current_format_decode_from_their_slots() {
        let bytes = current([None, Some(5)], &frames_of(5, 0..4));
        let decoded = decode(&bytes).unwrap();
        assert_eq!(decoded.epoch, Some(5));
        assert_eq!(decoded.batches.len(), 4);
        for (i, ops) in decoded.batches.iter().enumerate() {
            assert!(same(ops, &batch(i as u8)), "batch {i}");
            assert_eq!(decoded.frames[i].0, HEADERS + i * SLOT);
        }
        // The layout docs/format.md gives: the header's fields, a frame's numbers.
        assert_eq!(&bytes[SLOT..SLOT + 8], b"TVJRNL\x00\x02");
        assert_eq!(&bytes[SLOT + 8..SLOT + 16], &5u64.to_le_bytes());
        assert_eq!(
            &bytes[SLOT + 16..SLOT + 20],
            &crc32fast::hash(&bytes[SLOT..SLOT + 16]).to_le_bytes()
        );
        assert!(bytes[..SLOT].iter().all(|&b| b == 0));
        let first = HEADERS;
        assert_eq!(&bytes[first + 8..first + 16], &5u64.to_le_bytes(), "the epoch");
        assert_eq!(&bytes[first + 16..first + 24], &1u64.to_le_bytes(), "the number");
        // Only headers: no frames, nothing dirty.
        let empty = decode(&current([Some(6), Some(5)], &[])).unwrap();
        assert!(empty.batches.is_empty() && !empty.dirty);
        assert_eq!(empty.epoch, Some(6));
    }

    /// After a checkpoint, the frames of the epoch before are not the journal's, wherever
    /// they are; the new epoch's frames are, written over them.
    #[test]
    fn frames_of_an_earlier_epoch_are_not_read() {
        let old = frames_of(5, 0..6);
        let stale = current([Some(6), Some(5)], &old);
        let decoded = decode(&stale).unwrap();
        assert!(decoded.batches.is_empty());
        assert!(
            decoded.dirty,
            "the old frames are still there: the area is not zeros"
        );
        // Two frames of epoch 6 written over the first two of epoch 5.
        let mut frames = frames_of(6, 10..12);
        frames.extend_from_slice(&old[2..]);
        let decoded = decode(&current([Some(6), Some(5)], &frames)).unwrap();
        assert_eq!(decoded.batches.len(), 2);
        assert!(same(&decoded.batches[1], &batch(11)));
        // A header torn by a crash (the next checkpoint's, epoch 8 into slot 0): the other
        // one holds.
        let mut torn = current([Some(6), Some(7)], &frames_of(7, 0..3));
        torn[10] ^= 0xff;
        assert_eq!(decode(&torn).unwrap().batches.len(), 3);
        torn[SLOT + 10] ^= 0xff;
        assert!(
            matches!(decode(&torn), Err(Error::Corrupted { .. })),
            "neither header verifies"
        );
        // The current epoch's header damaged, the one before it read: the frames of the
        // later epoch are damage, not stale.
        let mut current_lost = current([Some(6), Some(7)], &frames_of(7, 0..3));
        current_lost[SLOT + 3] ^= 0x01;
        assert!(matches!(decode(&current_lost), Err(Error::Corrupted { .. })));
        // Epoch 6's header damaged where a crash cannot have torn it (frames of epoch 6
        // were written after it was durable): epoch 5's frames after epoch 6's are damage.
        let mut damaged = current([Some(6), Some(5)], &frames);
        damaged[3] ^= 0xff;
        assert!(matches!(decode(&damaged), Err(Error::Corrupted { .. })));
    }

    #[test]
    fn a_current_frame_cut_anywhere_drops_only_itself() {
        let frames = frames_of(3, 0..3);
        let whole = current([Some(2), Some(3)], &frames);
        let third = HEADERS + 2 * SLOT;
        for cut in third..third + frames[2].len() {
            // Cut, the rest zeros (a file extended before its data was written) or the
            // bytes of an earlier epoch's frame.
            let mut zeroed = whole.clone();
            zeroed[cut..].fill(0);
            assert_eq!(decode(&zeroed).unwrap().batches.len(), 2, "cut at {cut}");
            let mut older = whole[..cut].to_vec();
            let old = encode(2, 3, &batch(9)).unwrap();
            older.extend_from_slice(&old[cut - third..]);
            // (Where the old frame's last bytes are the new one's, the frame is whole.)
            let whole_again = older[third..] == whole[third..third + frames[2].len()];
            let expected = if whole_again { 3 } else { 2 };
            assert_eq!(
                decode(&older).unwrap().batches.len(),
                expected,
                "cut at {cut}, old bytes after"
            );
        }
    }

    /// A damaged frame with a later frame of its epoch is damage, not an end, however
    /// near the end it is (the first format could tell only past 64 KiB).
    #[test]
    fn a_damaged_current_frame_before_another_is_corrupted() {
        let frames = frames_of(3, 0..3);
        for (at, what) in [(HEADERS + 20, "first"), (HEADERS + SLOT + 2, "second's length")] {
            let mut bytes = current([None, Some(3)], &frames);
            bytes[at] ^= 0x10;
            assert!(matches!(decode(&bytes), Err(Error::Corrupted { .. })), "{what}");
        }
        // A verified frame out of sequence, or that does not parse.
        let mut wrong = frames_of(3, 0..1);
        wrong.push(encode(3, 3, &batch(1)).unwrap());
        assert!(matches!(
            decode(&current([None, Some(3)], &wrong)),
            Err(Error::Corrupted { .. })
        ));
        let bad_tree = encode(3, 1, &[Op::Clear(TreeName::Meta)]).map(|mut f| {
            let n = f.len();
            f[n - 1] = 8;
            let len: [u8; 4] = f[..4].try_into().unwrap();
            let crc = checksum(&len, &f[8..]).to_le_bytes();
            f[4..8].copy_from_slice(&crc);
            f
        });
        assert!(matches!(
            decode(&current([None, Some(3)], &[bad_tree.unwrap()])),
            Err(Error::Corrupted { .. })
        ));
    }

    /// The writer: frames go to their slots in order; a checkpoint moves the epoch on and
    /// zeroes what the frames used; the next epoch writes over the same bytes, so the file
    /// keeps its length.
    #[test]
    fn the_journal_writes_in_place_after_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        let mut journal = Journal::open(&path).unwrap();
        let created = std::fs::read(&path).unwrap();
        assert_eq!(created.len(), HEADERS);
        assert_eq!(
            (header_epoch(&created[..SLOT]), header_epoch(&created[SLOT..])),
            (Some(0), Some(1))
        );
        for i in 0..5 {
            let frame = journal.frame(&batch(i)).unwrap();
            journal.append(&frame).unwrap();
        }
        let first = read(&path).unwrap();
        assert_eq!((first.epoch, first.batches.len()), (Some(1), 5));
        let last = encode(1, 5, &batch(4)).unwrap().len();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            (HEADERS + 4 * SLOT + last) as u64
        );
        journal.empty().unwrap();
        // Zeroed to the end of the last frame's slot.
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(len, (HEADERS + 5 * SLOT) as u64);
        let emptied = read(&path).unwrap();
        assert_eq!(
            (emptied.epoch, emptied.batches.len(), emptied.dirty),
            (Some(2), 0, false)
        );
        for i in 10..13 {
            let frame = journal.frame(&batch(i)).unwrap();
            journal.append(&frame).unwrap();
        }
        let second = read(&path).unwrap();
        assert_eq!((second.epoch, second.batches.len()), (Some(2), 3));
        assert!(same(&second.batches[2], &batch(12)));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len, "written in place");
        // A second open starts where the headers say.
        drop(journal);
        empty_file(&path, &second).unwrap();
        let reopened = Journal::open(&path).unwrap();
        assert_eq!(reopened.epoch, 3);
        assert!(read(&path).unwrap().batches.is_empty());
    }

    /// A journal of the first format is replaced, after its replay, by an empty one of the
    /// current format.
    #[test]
    fn a_first_format_journal_is_replaced_once_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        std::fs::write(&path, journal(3)).unwrap();
        let decoded = read(&path).unwrap();
        assert_eq!((decoded.epoch, decoded.batches.len()), (None, 3));
        empty_file(&path, &decoded).unwrap();
        let now = read(&path).unwrap();
        assert_eq!((now.epoch, now.batches.len(), now.dirty), (Some(1), 0, false));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(Journal::open(&path).is_ok());
    }

    #[test]
    fn a_batch_too_large_for_a_frame_has_none() {
        let big = [Op::Put(TreeName::Tokens, vec![1; 16], vec![2; MAX_FRAME])];
        assert!(encode(1, 1, &big).is_none());
        assert!(encode_first_format(1, &big).is_none());
    }

    #[test]
    fn a_journal_longer_than_one_can_be_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        // Valid frames, more of them than a journal can hold: only the length refuses them.
        let big = [Op::Put(TreeName::Tokens, vec![1; 16], vec![2; 60_000])];
        let frames: Vec<u8> = (1..)
            .map(|n| encode_first_format(n, &big).unwrap())
            .scan(0usize, |len, f| {
                let before = *len;
                *len += f.len();
                (before <= MAX_JOURNAL as usize).then_some(f)
            })
            .flatten()
            .collect();
        assert!(frames.len() as u64 > MAX_JOURNAL);
        let fitting = &frames[..MAX_JOURNAL as usize];
        assert!(decode(fitting).is_ok());
        std::fs::write(&path, &frames).unwrap();
        assert!(matches!(read(&path), Err(Error::Corrupted { .. })));
        // Not a regular file.
        let dir_as_journal = dir.path().join("sub");
        std::fs::create_dir(&dir_as_journal).unwrap();
        assert!(read(&dir_as_journal).is_err());
        assert!(read(&dir.path().join("none")).unwrap().batches.is_empty());
    }
}
