//! The journal of a durable redb vault: the file `vault.redb-journal` beside `vault.redb`
//! (docs/format.md, "The redb journal").
//!
//! redb makes a commit durable by writing every page the commit copied and `fdatasync`ing
//! the file: for one saved token about twenty 4 KiB pages (six keys at random places of the
//! B-tree, the branches above them, redb's freed-page table and header). A durable vault on
//! redb instead commits each batch without `fdatasync`, appends what the batch wrote (its
//! puts, removes and clears, a frame of about the batch's own size) to this file and
//! `fdatasync`s the journal. Every [`CHECKPOINT_FRAMES`] frames (or once the journal holds
//! [`CHECKPOINT_BYTES`]), before a batch too large for a frame, and when the last handle
//! closes, one durable redb commit covers everything the journal holds, and the journal is
//! emptied. Opening a vault replays what its journal holds into redb, with one durable
//! commit, and empties it.
//!
//! Replaying is correct because every frame's writes are blind (a put or remove of a whole
//! value, never read-modify-write) and every commit between two checkpoints is in the
//! journal, in order: redb's file comes back after a crash at its last durable commit
//! (a checkpoint, or one from before the frames that a checkpoint interrupted by the crash
//! already covered), and replaying every frame in order from there reaches the state of
//! the last frame.
//!
//! A crash can leave only the frame being appended incomplete (appends are serialised,
//! each `fdatasync`ed before the next starts). So a journal whose end does not verify, in
//! no more bytes than one frame can have, ends at the last frame that does: what was
//! dropped was never acknowledged. More bytes that do not verify than one frame can have is
//! `Corrupted` (the vault does not open until the journal is dealt with), never a silent
//! loss of acknowledged writes.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use super::{Op, TreeName};
use crate::Error;

/// The journal's file name, beside the redb file.
pub(crate) const JOURNAL_FILE: &str = "vault.redb-journal";

/// The most frames between two checkpoints.
pub(crate) const CHECKPOINT_FRAMES: u64 = 1024;

/// A journal this long is checkpointed before the next frame.
pub(crate) const CHECKPOINT_BYTES: u64 = 4 * 1024 * 1024;

/// The largest frame (header included). A batch whose frame would be larger is committed
/// durably by redb itself, after a checkpoint.
pub(crate) const MAX_FRAME: usize = 64 * 1024;

/// A frame's header: the body's length (u32 LE) and a CRC-32 of the length and the body
/// (u32 LE).
const FRAME_HEADER: usize = 8;

/// The longest journal this code writes: a frame is appended only while the journal is
/// shorter than [`CHECKPOINT_BYTES`].
const MAX_JOURNAL: u64 = CHECKPOINT_BYTES + MAX_FRAME as u64;

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

/// The frame of batch number `seq` (1 for the first frame after the journal was emptied),
/// `ops`; `None` when it would be longer than [`MAX_FRAME`].
pub(crate) fn encode(seq: u64, ops: &[Op]) -> Option<Vec<u8>> {
    // Summed with a stop at the limit: a batch of millions of writes is refused before
    // anything is allocated for it.
    let len = ops.iter().try_fold(FRAME_HEADER + 8, |len, op| {
        Some(len + op_len(op)).filter(|&l| l <= MAX_FRAME)
    })?;
    let mut body = Vec::with_capacity(len - FRAME_HEADER);
    body.extend_from_slice(&seq.to_le_bytes());
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

/// The batch of a frame's verified body.
fn decode_body(body: &[u8], expected_seq: u64) -> Result<Vec<Op>, Error> {
    let mut body = Body(body);
    if u64::from_le_bytes(body.array()?) != expected_seq {
        return Err(damaged("frames out of sequence"));
    }
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

/// The batches that `bytes`, a journal's content, holds, in order (see the module's
/// documentation for what a journal whose end does not verify is).
pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<Vec<Op>>, Error> {
    let mut batches = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        match frame(rest, batches.len() as u64 + 1)? {
            Some((ops, after)) => {
                batches.push(ops);
                rest = after;
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
    Ok(batches)
}

/// A frame that verified: its batch, and the bytes after it.
type Verified<'a> = (Vec<Op>, &'a [u8]);

/// The frame at the start of `rest`: its batch and what follows it, or `None` when it does
/// not verify (incomplete, or its checksum does not match).
fn frame(rest: &[u8], seq: u64) -> Result<Option<Verified<'_>>, Error> {
    let Some((&[l0, l1, l2, l3, c0, c1, c2, c3], tail)) = rest.split_first_chunk::<FRAME_HEADER>() else {
        return Ok(None);
    };
    let len = [l0, l1, l2, l3];
    let body_len = u32::from_le_bytes(len) as usize;
    if body_len > MAX_FRAME - FRAME_HEADER {
        return Ok(None);
    }
    let Some((body, after)) = tail.split_at_checked(body_len) else {
        return Ok(None);
    };
    if checksum(&len, body) != u32::from_le_bytes([c0, c1, c2, c3]) {
        return Ok(None);
    }
    Ok(Some((decode_body(body, seq)?, after)))
}

/// Reads the journal at `path`: its batches, in order (none when there is no journal).
pub(crate) fn read(path: &Path) -> Result<Vec<Vec<Op>>, Error> {
    let mut file = match open(path, false) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
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
    if bytes.len() as u64 > MAX_JOURNAL {
        return Err(damaged("it is longer than a journal can be"));
    }
    decode(&bytes)
}

/// Opens the journal at `path` for appending, creating it (owner-only) when `create`;
/// never through a symbolic link.
pub(crate) fn open(path: &Path, create: bool) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).append(true).create(create);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    options.open(path)
}

/// The open journal of a durable handle.
pub(crate) struct Journal {
    file: File,
    /// Frames since the journal was last emptied (the last frame's number).
    frames: u64,
    /// Its length.
    bytes: u64,
    /// Whether an append failed part-way: nothing is appended again until a checkpoint has
    /// emptied the journal.
    failed: bool,
}

impl Journal {
    /// Opens (creates) the empty journal at `path`: the caller has replayed and emptied it.
    pub(crate) fn open(path: &Path) -> Result<Journal, Error> {
        let file = open(path, true)?;
        // A frame is durable only if the file holding it is found after a power loss: the
        // directory's entry is made durable before any frame (at every open, so that an
        // open that created the file and then failed here leaves no gap).
        sync_parent(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(damaged("it is not a regular file"));
        }
        if meta.len() != 0 {
            return Err(Error::internal(
                "the redb journal is opened for writing before it was emptied",
            ));
        }
        Ok(Journal {
            file,
            frames: 0,
            bytes: 0,
            failed: false,
        })
    }

    /// Whether a checkpoint must come before the next frame.
    pub(crate) fn full(&self) -> bool {
        self.failed || self.frames >= CHECKPOINT_FRAMES || self.bytes >= CHECKPOINT_BYTES
    }

    /// Whether it holds frames (or may, after a failed append).
    pub(crate) fn holds_frames(&self) -> bool {
        self.failed || self.frames > 0
    }

    /// The number the next frame carries.
    pub(crate) fn next_seq(&self) -> u64 {
        self.frames + 1
    }

    /// Appends `frame` and makes it durable.
    pub(crate) fn append(&mut self, frame: &[u8]) -> Result<(), Error> {
        let appended = self.file.write_all(frame).and_then(|()| self.file.sync_data());
        if let Err(e) = appended {
            self.failed = true;
            return Err(e.into());
        }
        self.frames += 1;
        self.bytes += frame.len() as u64;
        Ok(())
    }

    /// Empties the journal durably, once redb holds everything it held durably.
    pub(crate) fn empty(&mut self) -> Result<(), Error> {
        self.file.set_len(0)?;
        // Truncated: the next frame is number 1 again, but none is appended until the
        // truncation is durable (else a crash could leave frames numbered from 1 after
        // older ones).
        self.frames = 0;
        self.bytes = 0;
        self.failed = true;
        self.file.sync_all()?;
        self.failed = false;
        Ok(())
    }
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

/// Empties the journal file at `path`, if there is one (after a replay).
pub(crate) fn empty_file(path: &Path) -> Result<(), Error> {
    match open(path, false) {
        Ok(file) => {
            if file.metadata()?.len() != 0 {
                file.set_len(0)?;
                file.sync_all()?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
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
            .flat_map(|i| encode(u64::from(i) + 1, &batch(i)).unwrap())
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
        let batches = decode(&journal(5)).unwrap();
        assert_eq!(batches.len(), 5);
        for (i, ops) in batches.iter().enumerate() {
            assert!(same(ops, &batch(i as u8)), "batch {i}");
        }
        assert!(decode(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_frame_is_laid_out_as_the_format_says() {
        let frame = encode(
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
            let batches = decode(&whole[..cut]).unwrap();
            assert_eq!(batches.len(), 2, "cut at {cut}");
        }
        // The last frame's bytes zeroed (a file extended before its data was written).
        let mut zeroed = whole.clone();
        zeroed[two..].fill(0);
        assert_eq!(decode(&zeroed).unwrap().len(), 2);
    }

    #[test]
    fn a_damaged_frame_with_more_after_it_than_one_frame_is_corrupted() {
        // Enough frames after the first that the rest is longer than one frame can be.
        let mut bytes: Vec<u8> = (0..250u8)
            .flat_map(|i| encode(u64::from(i) + 1, &batch(i)).unwrap())
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
            decode(&std::fs::read(path).unwrap()).unwrap()
        };
        let three = seed("save-delete-clear");
        assert_eq!(three.iter().map(Vec::len).collect::<Vec<_>>(), [5, 4, 2]);
        assert!(matches!(&three[0][4], Op::Put(TreeName::Meta, k, v) if k == b"seals" && v.len() == 16));
        assert!(matches!(&three[1][3], Op::Remove(TreeName::Ids, k) if k.len() == 32));
        assert!(matches!(three[2][0], Op::Clear(TreeName::Quarantine)));
        assert_eq!(seed("cut-last-frame").len(), 3);
        assert_eq!(seed("one-save").len(), 1);
        assert!(seed("empty-batch")[0].is_empty());
    }

    #[test]
    fn a_batch_too_large_for_a_frame_has_none() {
        let big = [Op::Put(TreeName::Tokens, vec![1; 16], vec![2; MAX_FRAME])];
        assert!(encode(1, &big).is_none());
    }

    #[test]
    fn a_journal_longer_than_one_can_be_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        // Valid frames, more of them than a journal can hold: only the length refuses them.
        let big = [Op::Put(TreeName::Tokens, vec![1; 16], vec![2; 60_000])];
        let frames: Vec<u8> = (1..)
            .map(|n| encode(n, &big).unwrap())
            .scan(0usize, |len, f| {
                let before = *len;
                *len += f.len();
                (before <= MAX_JOURNAL as usize).then_some(f)
            })
            .flatten()
            .collect();
        assert!(frames.len() as u64 > MAX_JOURNAL);
        assert_eq!(
            decode(&frames).unwrap().len(),
            frames.len() / encode(1, &big).unwrap().len()
        );
        std::fs::write(&path, &frames).unwrap();
        assert!(matches!(read(&path), Err(Error::Corrupted { .. })));
        // Not a regular file.
        let dir_as_journal = dir.path().join("sub");
        std::fs::create_dir(&dir_as_journal).unwrap();
        assert!(read(&dir_as_journal).is_err());
        assert!(read(&dir.path().join("none")).unwrap().is_empty());
    }
}
