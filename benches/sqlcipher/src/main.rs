//! Peer (d), SQLCipher: the same harness and workload as `benches/peers.rs`, in its own
//! binary. Usage: `sqlcipher-bench run sqlcipher --n N`.

#[path = "../../common/harness.rs"]
mod harness;
#[path = "../../common/sql.rs"]
mod sql;

fn main() -> harness::R<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = harness::arg_n(&args);
    let tmp = harness::work_dir()?;
    // A fixed raw key (64 hex digits): no PBKDF2 at open, like the vault's figures.
    let key = "2dd29ca851e7b56e4697b0e1f08507293d761a05ce4d1b628663f411a8086d99";
    let mut peer = sql::SqlPeer::create(tmp.path().join("sqlcipher"), Some(key))?;
    harness::run(&mut peer, "sqlcipher", &harness::Plan::for_n(n))?;
    Ok(())
}
