//! Argon2id parameters, their bounds, and the passphrase-to-key step.
//!
//! Invariants: Argon2 never runs with parameters outside [`KdfParams::FLOOR`] and
//! [`KdfParams::CEILING`]; a header asking for more is refused before any work is done.
//! Argon2's working memory (19 MiB to 1 GiB, all of it derived from the passphrase) is
//! ours, and is zeroized before it is freed.

use argon2::{Algorithm, Argon2, Block, Params, Version};
use zeroize::{Zeroize, Zeroizing};

use crate::Error;

/// Argon2id cost parameters for turning a passphrase into a key.
///
/// # Security
/// The passphrase is the only secret protecting a stolen vault; these parameters set what
/// each guess costs an attacker. The default, [`KdfParams::RECOMMENDED`] (64 MiB, t=3,
/// p=4, RFC 9106's second recommendation), costs a fraction of a second to unlock. The
/// [`KdfParams::FLOOR`] (19 MiB, t=2, p=1, OWASP's minimum) is accepted for tests and small
/// devices; nothing below it is. [`KdfParams::CEILING`] (1 GiB, t=8, p=16) keeps a
/// doctored vault header from costing minutes or gigabytes to open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KdfParams {
    /// Memory cost in KiB.
    pub memory_kib: u32,
    /// Number of passes over the memory.
    pub iterations: u32,
    /// Degree of parallelism (lanes).
    pub parallelism: u32,
}

impl KdfParams {
    /// The default: Argon2id with 64 MiB, 3 passes, 4 lanes.
    pub const RECOMMENDED: KdfParams = KdfParams {
        memory_kib: 64 * 1024,
        iterations: 3,
        parallelism: 4,
    };
    /// The weakest parameters accepted: 19 MiB, 2 passes, 1 lane.
    pub const FLOOR: KdfParams = KdfParams {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    };
    /// The strongest parameters accepted: 1 GiB, 8 passes, 16 lanes.
    pub const CEILING: KdfParams = KdfParams {
        memory_kib: 1024 * 1024,
        iterations: 8,
        parallelism: 16,
    };

    /// Checks the parameters against the floor and the ceiling.
    ///
    /// # Errors
    /// `InvalidKdfParams` naming the bound crossed.
    pub fn validate(&self) -> Result<(), Error> {
        let check = |name: &str, v: u32, lo: u32, hi: u32| {
            if v < lo || v > hi {
                Err(Error::InvalidKdfParams {
                    reason: format!("{name} is {v}; it must be between {lo} and {hi}"),
                })
            } else {
                Ok(())
            }
        };
        check(
            "memory_kib",
            self.memory_kib,
            Self::FLOOR.memory_kib,
            Self::CEILING.memory_kib,
        )?;
        check(
            "iterations",
            self.iterations,
            Self::FLOOR.iterations,
            Self::CEILING.iterations,
        )?;
        check(
            "parallelism",
            self.parallelism,
            Self::FLOOR.parallelism,
            Self::CEILING.parallelism,
        )?;
        // Argon2 needs at least 8 KiB per lane.
        if self.memory_kib < 8 * self.parallelism {
            return Err(Error::InvalidKdfParams {
                reason: "memory_kib must be at least 8 times parallelism".into(),
            });
        }
        Ok(())
    }

    /// Whether `target` costs at least as much in every parameter and more in one: such a
    /// header is upgraded to `target` when it is opened.
    pub(crate) fn is_weaker_than(&self, target: &KdfParams) -> bool {
        self.memory_kib <= target.memory_kib
            && self.iterations <= target.iterations
            && self.parallelism <= target.parallelism
            && self != target
    }

    /// The larger of the two in each parameter: at least as costly as either. (Valid when
    /// both are: the memory stays at least 8 KiB per lane.)
    pub(crate) fn strongest_of(&self, other: &KdfParams) -> KdfParams {
        KdfParams {
            memory_kib: self.memory_kib.max(other.memory_kib),
            iterations: self.iterations.max(other.iterations),
            parallelism: self.parallelism.max(other.parallelism),
        }
    }

    /// Checks that no parameter exceeds `limit`'s.
    ///
    /// # Errors
    /// `InvalidKdfParams` naming the first parameter above the limit.
    pub(crate) fn check_within(&self, limit: &KdfParams) -> Result<(), Error> {
        for (name, v, max) in [
            ("memory_kib", self.memory_kib, limit.memory_kib),
            ("iterations", self.iterations, limit.iterations),
            ("parallelism", self.parallelism, limit.parallelism),
        ] {
            if v > max {
                return Err(Error::InvalidKdfParams {
                    reason: format!(
                        "the vault asks for {name} {v}, above the {max} this opener allows \
                         (VaultOptions::max_kdf); refused before running Argon2"
                    ),
                });
            }
        }
        Ok(())
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::RECOMMENDED
    }
}

/// The key-encryption key derived from a passphrase.
pub(crate) struct PassphraseKey(Zeroizing<[u8; 32]>);

impl PassphraseKey {
    /// The key's bytes (to wrap or unwrap the data key).
    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Argon2's memory is reserved at least this large (in 1 KiB blocks: 33 MiB), though only
/// the blocks the parameters use are written (and so resident). The C library's allocator
/// (glibc's) gives a block this large its own mapping and returns it to the system when it
/// is freed; a block under 32 MiB, once freed, raises its threshold for mapping, and the
/// next runs of a process (the floor's 19 MiB at each open) would stay in its heap, held
/// after the run.
const RESERVED_BLOCKS: usize = 33 * 1024;

/// Argon2's memory: the blocks in use (all that ever held anything) are zeroized when it is
/// dropped; the capacity beyond them was never written.
struct Memory(Vec<Block>);

impl Drop for Memory {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(Zeroize::zeroize);
    }
}

/// Runs Argon2id (version 0x13) over the passphrase.
///
/// # Errors
/// `InvalidKdfParams` if the parameters are out of bounds (checked before any work); `Io`
/// (out of memory) if Argon2's memory cannot be allocated.
pub(crate) fn derive_passphrase_key(
    passphrase: &[u8],
    salt: &[u8],
    params: &KdfParams,
) -> Result<PassphraseKey, Error> {
    params.validate()?;
    #[cfg(fuzzing)]
    if let Some(key) = fuzz_cache::get(passphrase, salt, params) {
        return Ok(PassphraseKey(key));
    }
    let argon_params = Params::new(params.memory_kib, params.iterations, params.parallelism, Some(32))
        .map_err(|e| Error::InvalidKdfParams {
            reason: e.to_string(),
        })?;
    // Argon2's own buffer is freed as it is; ours is zeroized first.
    let blocks = argon_params.block_count();
    let mut memory = Memory(Vec::new());
    memory
        .0
        .try_reserve_exact(blocks.max(RESERVED_BLOCKS))
        .map_err(|_| {
            Error::Io(std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!("Argon2 needs {} MiB, which could not be allocated", blocks / 1024),
            ))
        })?;
    memory.0.resize(blocks, Block::default());
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into_with_memory(passphrase, salt, out.as_mut(), memory.0.as_mut_slice())
        .map_err(|e| Error::InvalidKdfParams {
            reason: e.to_string(),
        })?;
    #[cfg(fuzzing)]
    fuzz_cache::put(passphrase, salt, params, &out);
    Ok(PassphraseKey(out))
}

/// Under fuzzing only: remembers Argon2 results, so targets that open vaults run many
/// executions a second. The KDF's inputs and outputs are unchanged.
#[cfg(fuzzing)]
mod fuzz_cache {
    use super::KdfParams;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use zeroize::Zeroizing;

    type Key = (Vec<u8>, Vec<u8>, KdfParams);
    static CACHE: Mutex<Option<HashMap<Key, [u8; 32]>>> = Mutex::new(None);

    pub(super) fn get(passphrase: &[u8], salt: &[u8], params: &KdfParams) -> Option<Zeroizing<[u8; 32]>> {
        let cache = CACHE.lock().ok()?;
        let hit = cache
            .as_ref()?
            .get(&(passphrase.to_vec(), salt.to_vec(), *params))?;
        Some(Zeroizing::new(*hit))
    }

    pub(super) fn put(passphrase: &[u8], salt: &[u8], params: &KdfParams, key: &[u8; 32]) {
        if let Ok(mut cache) = CACHE.lock() {
            let map = cache.get_or_insert_with(HashMap::new);
            if map.len() > 4096 {
                map.clear();
            }
            map.insert((passphrase.to_vec(), salt.to_vec(), *params), *key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_enforced() {
        assert!(KdfParams::FLOOR.validate().is_ok());
        assert!(KdfParams::CEILING.validate().is_ok());
        assert!(KdfParams::RECOMMENDED.validate().is_ok());
        for bad in [
            KdfParams {
                memory_kib: 19 * 1024 - 1,
                ..KdfParams::FLOOR
            },
            KdfParams {
                iterations: 1,
                ..KdfParams::FLOOR
            },
            KdfParams {
                parallelism: 0,
                ..KdfParams::FLOOR
            },
            KdfParams {
                memory_kib: 1024 * 1024 + 1,
                ..KdfParams::FLOOR
            },
            KdfParams {
                iterations: 9,
                ..KdfParams::FLOOR
            },
            KdfParams {
                parallelism: 17,
                ..KdfParams::FLOOR
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(Error::InvalidKdfParams { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn weaker_means_dominated() {
        assert!(KdfParams::FLOOR.is_weaker_than(&KdfParams::RECOMMENDED));
        assert!(!KdfParams::RECOMMENDED.is_weaker_than(&KdfParams::FLOOR));
        assert!(!KdfParams::RECOMMENDED.is_weaker_than(&KdfParams::RECOMMENDED));
        let more_mem_fewer_passes = KdfParams {
            memory_kib: 128 * 1024,
            iterations: 2,
            parallelism: 4,
        };
        assert!(!more_mem_fewer_passes.is_weaker_than(&KdfParams::RECOMMENDED));
    }

    #[test]
    fn the_strongest_of_two_takes_each_larger_parameter() {
        let a = KdfParams {
            memory_kib: 128 * 1024,
            iterations: 2,
            parallelism: 1,
        };
        let both = a.strongest_of(&KdfParams::RECOMMENDED);
        assert_eq!(both, KdfParams::RECOMMENDED.strongest_of(&a));
        assert_eq!(
            both,
            KdfParams {
                memory_kib: 128 * 1024,
                iterations: 3,
                parallelism: 4,
            }
        );
        assert!(both.validate().is_ok());
        assert_eq!(KdfParams::FLOOR.strongest_of(&KdfParams::FLOOR), KdfParams::FLOOR);
    }

    #[test]
    fn a_limit_is_checked_in_every_parameter() {
        let limit = KdfParams::RECOMMENDED;
        assert!(limit.check_within(&limit).is_ok());
        assert!(KdfParams::FLOOR.check_within(&limit).is_ok());
        for (over, name) in [
            (
                KdfParams {
                    memory_kib: limit.memory_kib + 1,
                    ..limit
                },
                "memory_kib",
            ),
            (
                KdfParams {
                    iterations: limit.iterations + 1,
                    ..limit
                },
                "iterations",
            ),
            (
                KdfParams {
                    parallelism: limit.parallelism + 1,
                    ..limit
                },
                "parallelism",
            ),
        ] {
            match over.check_within(&limit) {
                Err(Error::InvalidKdfParams { reason }) => assert!(reason.contains(name), "{reason}"),
                other => panic!("{over:?}: {other:?}"),
            }
        }
    }
}
