//! Argon2's working memory goes back to the system after each run.
//!
//! Protects against: a process that opens vaults keeping Argon2's memory after the run.
//! glibc's allocator gives a freed block under 32 MiB back to its heap, not to the
//! system, once a first such block was freed (it then raises its threshold for mapping
//! blocks on their own): with the floor's 19 MiB, every open after the first would leave
//! 19 MiB held by the process. Its own binary, so no other test allocates meanwhile.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a panic is how a check fails"
)]

/// The process's resident memory (KiB), from `/proc/self/status`.
#[cfg(target_os = "linux")]
fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn opens_with_the_floor_kdf_do_not_keep_argon2_memory() {
    use tokenvault::{KdfParams, VaultOptions};
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("vault");
    let options = VaultOptions::new().kdf(KdfParams::FLOOR);
    drop(options.create(&path, "p").unwrap());
    drop(options.open(&path, "p").unwrap());
    let before = resident_kib();
    for _ in 0..3 {
        drop(options.open(&path, "p").unwrap());
    }
    let after = resident_kib();
    // The floor's Argon2 memory is 19 MiB; what an open keeps otherwise is far less.
    assert!(
        after < before + 8 * 1024,
        "resident memory grew from {before} KiB to {after} KiB over three opens"
    );
}
