//! Unit tests of the vault that need its internals: the frozen fixture's writer and the
//! fault-injection storage.

mod fixture {
    use std::fs;
    use std::path::Path;

    use super::super::fs::LOCK_FILE;
    use super::super::VaultOptions;
    use crate::crypto::test_rng;
    use crate::{KdfParams, OAuthToken, TokenStore};

    /// The tokens of the frozen v1 fixture, in the order they are saved.
    pub(crate) fn fixture_tokens() -> Vec<OAuthToken> {
        let base = |n: u32| {
            OAuthToken::default()
                .with_user_name(format!("fixture{n}@example.com"))
                .with_client_id("1000.FIXTURE")
                .with_client_secret(format!("fixture-secret-{n}"))
                .with_refresh_token(format!("1000.fixture-refresh-{n}"))
                .with_access_token(format!("1000.fixture-access-{n}"))
                .with_grant_token(format!("1000.fixture-grant-{n}"))
                .with_expiry_time(1_764_000_000_000 + i64::from(n))
                .with_redirect_url("https://example.com/cb")
                .with_api_domain("https://www.zohoapis.com")
        };
        vec![
            base(0),
            base(1).with_id("1"),
            base(2)
                .with_user_name("nobody' OR '1'='1")
                .with_client_secret("quote\"comma,nul\0end"),
            base(3)
                .with_user_name("émoji 🔑 ユーザー")
                .with_access_token("1000.fixture-access-0"),
            OAuthToken::default()
                .with_id("refresh-only")
                .with_refresh_token("1000.fixture-lone-refresh"),
        ]
    }

    /// Writes `tests/fixtures/v1/` through the real code path with a deterministic random
    /// source. Run only to regenerate the fixture: `cargo test --lib write_v1_fixture --
    /// --ignored`. A committed fixture must never be regenerated for a format change: every
    /// later version must open the old one.
    #[test]
    #[ignore = "regenerates the committed fixture"]
    fn write_v1_fixture() {
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
        let _ = fs::remove_dir_all(&out);
        fs::create_dir_all(&out).unwrap();
        test_rng::seed(0x7465_7374_7661_756c);
        let options = VaultOptions::new().kdf(KdfParams::FLOOR);
        let vault = options
            .create(out.join("vault"), "tokenvault v1 fixture (old)")
            .unwrap();
        let mut saved = Vec::new();
        for (n, mut t) in fixture_tokens().into_iter().enumerate() {
            if n == 3 {
                vault.rotate_key().unwrap();
            }
            vault.save_token(&mut t).unwrap();
            saved.push(t);
        }
        // A deleted token and an update, so the fixture has history.
        let mut gone = OAuthToken::default()
            .with_id("deleted")
            .with_access_token("1000.fixture-deleted");
        vault.save_token(&mut gone).unwrap();
        vault.delete_token("deleted").unwrap();
        let mut update = OAuthToken::default()
            .with_id("1")
            .with_access_token("1000.fixture-access-1b");
        vault.save_token(&mut update).unwrap();
        saved[1] = update;
        vault.change_passphrase("tokenvault v1 fixture").unwrap();
        drop(vault);
        let _ = fs::remove_file(out.join("vault").join(LOCK_FILE));
        let json = serde_json::to_string_pretty(&saved).unwrap();
        fs::write(out.join("expected.json"), json).unwrap();
    }
}

mod faults {
    //! A storage that fails like a full disk, through the seam: a failed save or delete
    //! changes nothing, reports `Io`, and the vault keeps working once space is back.
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::super::VaultOptions;
    use crate::backend::{
        BatchVisitor, Bytes, EntryVisitor, Expect, LocalStorage, Op, Outcome, Storage, TreeName,
    };
    use crate::{Error, KdfParams, OAuthToken, TokenStore};

    struct FullDisk {
        inner: LocalStorage,
        full: Arc<AtomicBool>,
    }

    impl Storage for FullDisk {
        fn get(&self, tree: TreeName, key: &[u8]) -> Result<Option<Bytes>, Error> {
            self.inner.get(tree, key)
        }
        fn any(&self, tree: TreeName, f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<bool, Error> {
            self.inner.any(tree, f)
        }
        fn for_each(&self, tree: TreeName, f: &mut EntryVisitor<'_>) -> Result<(), Error> {
            self.inner.for_each(tree, f)
        }
        fn for_each_batch(
            &self,
            tree: TreeName,
            batch: usize,
            f: &mut BatchVisitor<'_>,
        ) -> Result<(), Error> {
            self.inner.for_each_batch(tree, batch, f)
        }
        fn apply_if(&self, expects: &[Expect], ops: &[Op]) -> Result<Outcome, Error> {
            if self.full.load(Ordering::SeqCst) {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "no space left",
                )));
            }
            self.inner.apply_if(expects, ops)
        }
        fn size_on_disk(&self) -> Result<u64, Error> {
            self.inner.size_on_disk()
        }
        fn flush(&self) -> Result<(), Error> {
            if self.full.load(Ordering::SeqCst) {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "no space left",
                )));
            }
            self.inner.flush()
        }
    }

    fn token(n: u32, stamp: u32) -> OAuthToken {
        OAuthToken::default()
            .with_id(format!("id-{n}"))
            .with_user_name(format!("user{n}"))
            .with_access_token(format!("access-{n}-{stamp}"))
    }

    #[test]
    fn a_full_disk_fails_writes_cleanly_and_the_vault_recovers() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        let options = VaultOptions::new().kdf(KdfParams::FLOOR);
        {
            let v = options.create(&path, "p").unwrap();
            for n in 0..5 {
                v.save_token(&mut token(n, 0)).unwrap();
            }
        }
        let full = Arc::new(AtomicBool::new(false));
        let flag = full.clone();
        let v = options
            .open_with(&path, "p", move |inner| FullDisk { inner, full: flag })
            .unwrap();
        full.store(true, Ordering::SeqCst);
        let mut update = token(1, 1);
        assert!(matches!(v.save_token(&mut update), Err(Error::Io(_))));
        assert!(matches!(v.save_token(&mut token(9, 0)), Err(Error::Io(_))));
        assert!(matches!(v.delete_token("id-2"), Err(Error::Io(_))));
        assert!(matches!(v.delete_tokens(), Err(Error::Io(_))));
        assert!(v.rotate_key().is_err());
        assert!(v.change_passphrase("q").is_err());
        // Reads still work and show the old state, entirely.
        assert_eq!(v.find_token_by_id("id-1").unwrap(), Some(token(1, 0)));
        assert_eq!(v.find_token_by_id("id-9").unwrap(), None);
        assert_eq!(v.get_tokens().unwrap().len(), 5);
        let q = OAuthToken::default().with_access_token("access-1-1");
        assert_eq!(v.find_token(&q).unwrap(), None);
        full.store(false, Ordering::SeqCst);
        v.save_token(&mut update).unwrap();
        v.delete_token("id-2").unwrap();
        assert_eq!(v.find_token(&q).unwrap(), Some(token(1, 1)));
        assert!(v.verify().unwrap().is_clean());
        drop(v);
        // The failed passphrase change left the old passphrase in place.
        let v = options.open(&path, "p").unwrap();
        assert_eq!(v.get_tokens().unwrap().len(), 4);
    }
}

mod races {
    //! Another writer of the same storage (a second server on a shared engine) changes a
    //! value a save read, between its reads and its commit: the commit must not apply; the
    //! save decides again from fresh reads, and gives up, changing nothing, when it keeps
    //! losing.
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use super::super::VaultOptions;
    use crate::backend::{
        BatchVisitor, Bytes, Decide, EntryVisitor, Expect, LocalStorage, Op, Outcome, Storage, TreeName,
    };
    use crate::{Error, KdfParams, OAuthToken, TokenStore};

    type Hook = Box<dyn FnMut(&LocalStorage) + Send>;

    /// Runs `hook` (the rival writer) just before each conditional batch applies, and
    /// `read_hook` once, just before the first read of its tree.
    struct Rival {
        inner: LocalStorage,
        hook: Arc<Mutex<Option<Hook>>>,
        read_hook: Arc<Mutex<Option<(TreeName, Hook)>>>,
        conflicts: Arc<AtomicUsize>,
        /// An exclusive batch applies, but its caller gets an error (an answer lost).
        lose_answer: Arc<AtomicBool>,
    }

    impl Storage for Rival {
        fn exclusive(&self, decide: &mut Decide<'_>) -> Result<Outcome, Error> {
            let outcome = self.inner.exclusive(decide)?;
            if self.lose_answer.load(Ordering::SeqCst) {
                return Err(Error::Storage {
                    message: "the answer was lost".into(),
                });
            }
            Ok(outcome)
        }
        fn get(&self, tree: TreeName, key: &[u8]) -> Result<Option<Bytes>, Error> {
            let mut read_hook = self.read_hook.lock().unwrap();
            if matches!(&*read_hook, Some((t, _)) if *t == tree) {
                if let Some((_, mut hook)) = read_hook.take() {
                    hook(&self.inner);
                }
            }
            drop(read_hook);
            self.inner.get(tree, key)
        }
        fn any(&self, tree: TreeName, f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<bool, Error> {
            self.inner.any(tree, f)
        }
        fn for_each(&self, tree: TreeName, f: &mut EntryVisitor<'_>) -> Result<(), Error> {
            self.inner.for_each(tree, f)
        }
        fn for_each_batch(
            &self,
            tree: TreeName,
            batch: usize,
            f: &mut BatchVisitor<'_>,
        ) -> Result<(), Error> {
            self.inner.for_each_batch(tree, batch, f)
        }
        fn apply_if(&self, expects: &[Expect], ops: &[Op]) -> Result<Outcome, Error> {
            if !expects.is_empty() {
                if let Some(hook) = self.hook.lock().unwrap().as_mut() {
                    hook(&self.inner);
                }
            }
            let outcome = self.inner.apply_if(expects, ops)?;
            if outcome == Outcome::Conflict {
                self.conflicts.fetch_add(1, Ordering::SeqCst);
            }
            Ok(outcome)
        }
        fn size_on_disk(&self) -> Result<u64, Error> {
            self.inner.size_on_disk()
        }
        fn flush(&self) -> Result<(), Error> {
            self.inner.flush()
        }
    }

    /// Every entry of every tree but `meta` (whose seal counter the process keeps track of).
    fn snapshot(s: &LocalStorage) -> Vec<(TreeName, Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        for tree in TreeName::ALL.into_iter().filter(|t| *t != TreeName::Meta) {
            s.for_each(tree, &mut |k, v| {
                out.push((tree, k.to_vec(), v.to_vec()));
                Ok(())
            })
            .unwrap();
        }
        out
    }

    /// Makes the trees but `meta` hold exactly `snap`, as a rival writer would.
    fn install(s: &LocalStorage, snap: &[(TreeName, Vec<u8>, Vec<u8>)]) {
        let mut ops: Vec<Op> = snapshot(s)
            .into_iter()
            .map(|(t, k, _)| Op::Remove(t, k))
            .collect();
        ops.extend(snap.iter().map(|(t, k, v)| Op::Put(*t, k.clone(), v.clone())));
        s.apply(&ops).unwrap();
    }

    struct Setup {
        _tmp: tempfile::TempDir,
        vault: crate::Vault,
        raw: LocalStorage,
        hook: Arc<Mutex<Option<Hook>>>,
        read_hook: Arc<Mutex<Option<(TreeName, Hook)>>>,
        conflicts: Arc<AtomicUsize>,
        lose_answer: Arc<AtomicBool>,
        /// alice with access token a1, and after her update to a2.
        before: Vec<(TreeName, Vec<u8>, Vec<u8>)>,
        after: Vec<(TreeName, Vec<u8>, Vec<u8>)>,
        /// alice deleted, and a new alice (another id) saved with access token b1.
        replaced: Vec<(TreeName, Vec<u8>, Vec<u8>)>,
    }

    fn alice(access: &str) -> OAuthToken {
        OAuthToken::default()
            .with_user_name("alice")
            .with_access_token(access)
    }

    fn setup() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        let options = VaultOptions::new().kdf(KdfParams::FLOOR);
        drop(options.create(&path, "p").unwrap());
        let hook: Arc<Mutex<Option<Hook>>> = Arc::new(Mutex::new(None));
        let conflicts = Arc::new(AtomicUsize::new(0));
        let raw = Arc::new(Mutex::new(None));
        let read_hook: Arc<Mutex<Option<(TreeName, Hook)>>> = Arc::new(Mutex::new(None));
        let lose_answer = Arc::new(AtomicBool::new(false));
        let (h, rh, c, r) = (hook.clone(), read_hook.clone(), conflicts.clone(), raw.clone());
        let lose = lose_answer.clone();
        let vault = options
            .open_with(&path, "p", move |inner: LocalStorage| {
                *r.lock().unwrap() = Some(inner.clone());
                Rival {
                    inner,
                    hook: h,
                    read_hook: rh,
                    conflicts: c,
                    lose_answer: lose,
                }
            })
            .unwrap();
        let raw = raw.lock().unwrap().take().unwrap();
        vault.save_token(&mut alice("a1")).unwrap();
        let before = snapshot(&raw);
        vault.save_token(&mut alice("a2")).unwrap();
        let after = snapshot(&raw);
        assert_ne!(before, after);
        let first = vault.get_tokens().unwrap().remove(0);
        vault.delete_token(first.id().unwrap()).unwrap();
        vault.save_token(&mut alice("b1")).unwrap();
        let replaced = snapshot(&raw);
        install(&raw, &after);
        Setup {
            _tmp: tmp,
            vault,
            raw,
            hook,
            read_hook,
            conflicts,
            lose_answer,
            before,
            after,
            replaced,
        }
    }

    fn find_access(v: &crate::Vault, access: &str) -> Option<OAuthToken> {
        v.find_token(&OAuthToken::default().with_access_token(access))
            .unwrap()
    }

    #[test]
    fn a_save_that_lost_a_race_decides_again_from_what_the_winner_wrote() {
        let s = setup();
        // The vault holds alice at a1; a rival moves her to a2 after this save read her.
        install(&s.raw, &s.before);
        let after = s.after.clone();
        let mut once = Some(());
        *s.hook.lock().unwrap() = Some(Box::new(move |raw| {
            if once.take().is_some() {
                install(raw, &after);
            }
        }));
        let mut update = alice("a3").with_refresh_token("r3");
        s.vault.save_token(&mut update).unwrap();
        assert_eq!(s.conflicts.load(Ordering::SeqCst), 1);
        // Decided from a2: a2's access entry went with it, nothing dangles.
        let tokens = s.vault.get_tokens().unwrap();
        assert_eq!(tokens.len(), 1);
        assert_eq!(tokens[0].access_token(), Some("a3"));
        assert_eq!(tokens[0].refresh_token(), Some("r3"));
        assert_eq!(find_access(&s.vault, "a3"), Some(update));
        assert_eq!(find_access(&s.vault, "a2"), None);
        assert_eq!(find_access(&s.vault, "a1"), None);
        let report = s.vault.verify().unwrap();
        assert!(report.is_clean(), "{report:?}");
    }

    #[test]
    fn a_save_that_keeps_losing_gives_up_and_writes_nothing() {
        let s = setup();
        let (before, after) = (s.before.clone(), s.after.clone());
        let mut flip = false;
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        *s.hook.lock().unwrap() = Some(Box::new(move |raw| {
            counted.fetch_add(1, Ordering::SeqCst);
            install(raw, if flip { &after } else { &before });
            flip = !flip;
        }));
        let err = s.vault.save_token(&mut alice("a4")).unwrap_err();
        assert!(matches!(err, Error::Storage { .. }), "{err:?}");
        assert!(err.to_string().contains("gave up"), "{err}");
        let attempts = calls.load(Ordering::SeqCst);
        assert_eq!(attempts, super::super::WRITE_ATTEMPTS as usize);
        assert_eq!(s.conflicts.load(Ordering::SeqCst), attempts);
        assert_eq!(find_access(&s.vault, "a4"), None);
        *s.hook.lock().unwrap() = None;
        // Unhindered, the same save goes through.
        s.vault.save_token(&mut alice("a4")).unwrap();
        assert_eq!(find_access(&s.vault, "a4").unwrap().access_token(), Some("a4"));
        assert!(s.vault.verify().unwrap().is_clean());
    }

    #[test]
    fn a_refusal_decided_from_reads_a_rival_changed_in_between_is_decided_again() {
        let s = setup();
        // alice (a1) is updated by her id; between the read of her record and the read of
        // the user-name index, a rival deletes her and saves a new alice (another id).
        install(&s.raw, &s.before);
        let id = find_access(&s.vault, "a1").unwrap().id().unwrap().to_owned();
        let replaced = s.replaced.clone();
        *s.read_hook.lock().unwrap() = Some((
            TreeName::User,
            Box::new(move |raw: &LocalStorage| install(raw, &replaced)),
        ));
        // Decided from one state, the save would find the name taken by another token
        // (`InvalidToken`); decided again from what the rival left, it goes through.
        let mut update = alice("a5").with_id(id);
        s.vault.save_token(&mut update).unwrap();
        assert!(s.read_hook.lock().unwrap().is_none(), "the rival ran");
        let tokens = s.vault.get_tokens().unwrap();
        assert!(
            tokens.iter().any(|t| t.access_token() == Some("a5")),
            "{tokens:?}"
        );
        assert_eq!(
            tokens.iter().filter(|t| t.user_name() == Some("alice")).count(),
            1,
            "{tokens:?}"
        );
        let report = s.vault.verify().unwrap();
        assert!(report.is_clean(), "{report:?}");
    }

    #[test]
    fn a_rekey_whose_answer_was_lost_leaves_the_handle_refusing_never_missing() {
        let s = setup();
        let q = OAuthToken::default().with_user_name("alice");
        assert!(s.vault.find_token(&q).unwrap().is_some());
        s.lose_answer.store(true, Ordering::SeqCst);
        // The re-key applies, but this handle is told it failed: its keys may or may not
        // be the vault's now.
        assert!(s.vault.rekey("q").is_err());
        s.lose_answer.store(false, Ordering::SeqCst);
        // It reads the header again: the new one is not under its passphrase key. Every
        // call is then an error, never a miss under the old keys.
        assert!(matches!(s.vault.find_token(&q), Err(Error::WrongPassphrase)));
        assert!(matches!(s.vault.get_tokens(), Err(Error::WrongPassphrase)));
        assert!(matches!(
            s.vault.save_token(&mut alice("a9")),
            Err(Error::WrongPassphrase)
        ));
    }

    #[test]
    fn a_delete_that_lost_a_race_removes_what_the_winner_wrote() {
        let s = setup();
        install(&s.raw, &s.before);
        let after = s.after.clone();
        let mut once = Some(());
        *s.hook.lock().unwrap() = Some(Box::new(move |raw| {
            if once.take().is_some() {
                install(raw, &after);
            }
        }));
        let id = find_access(&s.vault, "a1").unwrap().id().unwrap().to_owned();
        s.vault.delete_token(&id).unwrap();
        assert_eq!(s.conflicts.load(Ordering::SeqCst), 1);
        assert!(s.vault.get_tokens().unwrap().is_empty());
        // a2's entry, written by the rival, went with the token.
        let report = s.vault.verify().unwrap();
        assert!(report.is_clean(), "{report:?}");
    }
}
