//! The quarantine: records that `repair` set aside because they no longer open.
//!
//! An entry's key is the record's slot followed by a 4-byte big-endian number (0, unless
//! a record at that slot was set aside before). Its value is `label_len(4, BE) || label ||
//! record`: the record byte for byte as `repair` found it, and a label naming the token:
//! its id sealed under the record key for the `quarantine` tree and the slot (empty when
//! the id was not known).
//!
//! Invariants: nothing here is ever opened as a token, and nothing here is removed except
//! by `delete_tokens`; an entry that does not parse is listed as unknown, never an error.

use super::records::open_id;
use crate::backend::Storage;
use crate::backend::{Op, TreeName};
use crate::crypto::keys::{VaultKeys, MAC_LEN};
use crate::crypto::{fresh_nonce, seal};
use crate::Error;

/// One quarantine entry, parsed.
pub(super) struct Entry<'a> {
    /// The slot the record was found at.
    pub(super) slot: &'a [u8],
    /// Which of the entries set aside from that slot.
    pub(super) number: u32,
    /// The sealed id, or empty.
    pub(super) label: &'a [u8],
    /// The record's bytes as found.
    pub(super) record: &'a [u8],
}

impl<'a> Entry<'a> {
    /// Parses an entry read from the quarantine tree; `None` if it is malformed.
    pub(super) fn parse(key: &'a [u8], value: &'a [u8]) -> Option<Self> {
        let (slot, number) = key.split_at_checked(MAC_LEN)?;
        let number = u32::from_be_bytes(number.try_into().ok()?);
        let (len, rest) = value.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        let (label, record) = rest.split_at_checked(len)?;
        Some(Entry {
            slot,
            number,
            label,
            record,
        })
    }

    /// The token's id, if the label opens under `keys`.
    pub(super) fn id(&self, keys: &VaultKeys) -> Option<String> {
        if self.label.is_empty() {
            return None;
        }
        open_id(keys, TreeName::Quarantine, self.slot, self.label)
    }
}

/// The key of the `number`th entry set aside from `slot`.
pub(super) fn key(slot: &[u8], number: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(slot.len() + 4);
    key.extend_from_slice(slot);
    key.extend_from_slice(&number.to_be_bytes());
    key
}

/// An entry's value: the record as found, labelled with `id` (sealed under the current
/// epoch's key; one seal) when it is known.
pub(super) fn value(
    keys: &VaultKeys,
    epoch: u32,
    slot: &[u8; MAC_LEN],
    id: Option<&str>,
    record: &[u8],
) -> Result<Vec<u8>, Error> {
    let label = match id {
        Some(id) => seal::seal_record(
            keys,
            TreeName::Quarantine.name(),
            slot,
            epoch,
            fresh_nonce()?,
            id.as_bytes(),
        )?,
        None => Vec::new(),
    };
    let len = u32::try_from(label.len()).map_err(|_| Error::corrupted("quarantine label too long"))?;
    let mut out = Vec::with_capacity(4 + label.len() + record.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&label);
    out.extend_from_slice(record);
    Ok(out)
}

/// For a re-key: moves every entry whose id is known under `old` to its slot under `new`,
/// labelled again under `new` (epoch 0). Entries without a known id stay as they are.
/// Returns the number of seals made.
pub(super) fn relabel(
    storage: &dyn Storage,
    old: &VaultKeys,
    new: &VaultKeys,
    ops: &mut Vec<Op>,
) -> Result<u64, Error> {
    let mut seals = 0;
    storage.for_each(TreeName::Quarantine, &mut |k, v| {
        let Some(entry) = Entry::parse(k, v) else {
            return Ok(());
        };
        let Some(id) = entry.id(old) else {
            return Ok(());
        };
        let slot = new.slot(&id);
        ops.push(Op::Remove(TreeName::Quarantine, k.to_vec()));
        ops.push(Op::Put(
            TreeName::Quarantine,
            key(&slot, entry.number),
            value(new, 0, &slot, Some(&id), entry.record)?,
        ));
        seals += 1;
        Ok(())
    })?;
    Ok(seals)
}
