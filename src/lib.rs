//! tokenvault: an encrypted, embedded store for OAuth tokens.
//!
//! Apps that talk to OAuth APIs keep access, refresh and grant tokens and client secrets
//! between runs. tokenvault keeps them sealed with AES-256-GCM under a data key that only
//! the user's passphrase unlocks (Argon2id), in an embedded sled database, with blind
//! (keyed-hash) indexes so every lookup the Zoho CRM SDKs need is one probe away. Nothing
//! secret is ever written to disk in the clear.
//!
//! The [`TokenStore`] trait carries the SDK's six operations with exact semantics;
//! [`Vault`] implements them on disk, [`MemoryStore`] in memory.
//!
//! ```
//! use tokenvault::{MemoryStore, OAuthToken, TokenStore};
//!
//! let store = MemoryStore::new();
//! let mut token = OAuthToken::default()
//!     .with_user_name("alice@example.com")
//!     .with_client_id("1000.ABC")
//!     .with_client_secret("s3cret")
//!     .with_refresh_token("1000.refresh");
//! store.save_token(&mut token)?;
//! let found = store
//!     .find_token(&OAuthToken::default().with_user_name("alice@example.com"))?
//!     .expect("saved above");
//! assert_eq!(found.refresh_token(), Some("1000.refresh"));
//! # Ok::<(), tokenvault::Error>(())
//! ```
// The package's lints are declared once, in Cargo.toml's `[lints]`; this one is also
// spelled out here, where a reader of the library looks for it.
#![forbid(unsafe_code)]

mod backend;
mod crypto;
mod error;
#[cfg(fuzzing)]
#[doc(hidden)]
#[allow(missing_docs, clippy::panic)]
pub mod fuzzing;
mod memory;
mod store;
mod token;
mod vault;

pub use backend::Engine;
pub use crypto::KdfParams;
pub use error::Error;
pub use memory::MemoryStore;
pub use store::{Saved, TokenStore};
pub use token::{Field, FieldValue, OAuthToken};
pub use vault::{Problem, QuarantinedRecord, Vault, VaultOptions, VerifyReport};

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
