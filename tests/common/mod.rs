//! Test support shared by several integration-test files: the generic conformance suite
//! (docs/design.md section 3, as a macro over any `TokenStore`) and the model check used by the
//! property tests.
//!
//! Each test file includes this module with `#[macro_use] mod common;` and uses only part
//! of it, hence the blanket `dead_code` allowance.
#![allow(dead_code)]

#[macro_use]
pub mod conformance;
pub mod model;

use std::path::{Path, PathBuf};

/// The directory of a vault's live sled database: the generation that `CURRENT` names, or
/// the vault directory itself in the layout from before generations.
pub fn sled_dir(vault: impl AsRef<Path>) -> PathBuf {
    let vault = vault.as_ref();
    match std::fs::read_to_string(vault.join("CURRENT")) {
        Ok(pointer) => {
            let n = pointer
                .strip_prefix("tokenvault generation ")
                .and_then(|p| p.strip_suffix('\n'))
                .expect("a generation pointer");
            vault.join(format!("gen-{n}"))
        }
        Err(_) => vault.to_path_buf(),
    }
}
