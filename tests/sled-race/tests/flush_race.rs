//! A flush racing sled's writer thread must not touch a freed I/O buffer.
//!
//! sled's `IoBufs::current_iobuf` turned the raw pointer of the current I/O buffer into an
//! `Arc` and cloned it without pinning an epoch. A seal that swapped the buffer out at the
//! same moment drops its reference through the epoch, and sled's writer thread drops the
//! last one when the write is done: between the load and the clone, both could be gone, and
//! the clone wrote into freed memory. AddressSanitizer found it while fuzzing tokenvault
//! (fuzz/CAMPAIGN.md, finding 9); `Tree::flush`, which the vault calls after every durable
//! write, reaches `current_iobuf` unpinned.
//!
//! Here eight threads insert and flush at once, so that flushes seal buffers while other
//! flushes are reading the current one. Built with `--cfg tokenvault_iobuf_race_window`,
//! sled sleeps 1 ms between the load and the clone whenever the caller is not pinned. Only
//! AddressSanitizer sees the fault (a freed buffer's count can still be incremented), with
//! crossbeam's `--cfg crossbeam_sanitize` so that deferred drops run soon; scripts/test.sh
//! runs it that way. Without the fix it fails within seconds, every
//! time (vendor/sled/PATCHES.md).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const THREADS: usize = 8;

#[test]
fn flushes_racing_writes_read_only_live_buffers() {
    let seconds: u64 = std::env::var("FLUSH_RACE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let db = sled::Config::new()
        .temporary(true)
        .flush_every_ms(None)
        .open()
        .expect("open a temporary sled");
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(seconds);

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let db = db.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut flushes = 0_u64;
                let mut i = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = [t.to_be_bytes().as_slice(), &i.to_be_bytes()].concat();
                    let len = 64 + (i % 512) as usize;
                    db.insert(key, vec![t as u8; len]).expect("insert");
                    if i.is_multiple_of(2) {
                        db.flush().expect("flush");
                        flushes += 1;
                    }
                    i += 1;
                }
                (i, flushes)
            })
        })
        .collect();

    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);

    let mut writes = 0;
    let mut flushes = 0;
    for w in workers {
        let (i, f) = w.join().expect("a worker panicked");
        writes += i;
        flushes += f;
    }
    // The race needs many seals while other threads read the current buffer.
    assert!(flushes > 100, "only {flushes} flushes in {seconds} s");
    assert_eq!(db.len() as u64, writes, "every insert is in the tree");
    eprintln!("{writes} inserts, {flushes} flushes on {THREADS} threads in {seconds} s");
}
