//! Writes the committed seed corpora under `fuzz/corpus/<target>/`.
//!
//! Run from `fuzz/` with the fuzzing hooks compiled in:
//! `RUSTFLAGS="--cfg fuzzing" cargo run --example gen_seeds`
//! The output is deterministic except for the header seeds, which carry the random salt,
//! nonce and keys of a freshly created vault, and the quarantine entry with an id, whose
//! label is sealed under a random nonce (records are sealed under fixed keys and a fixed
//! nonce; the `etcd_responses` seeds build their header from fixed fields). The seeds of
//! `import_csv` and `save_json` include inputs that repeat parts of themselves (`expand`)
//! past each cap; those take a second or so each to run.

use std::fs;
use std::path::Path;

use prost::Message;
use sha2::{Digest, Sha256};
use tokenvault::fuzzing::etcd_proto::{
    PbDeleteResponse, PbKeyValue, PbPutResponse, PbRangeResponse, PbResponseHeader, PbResponseOp,
    PbTxnOpResponse, PbTxnResponse,
};
use tokenvault::fuzzing::{encode_pointer, encode_quarantine_entry, encode_token, seal_record};
use tokenvault::{KdfParams, OAuthToken, VaultOptions};
use tokenvault_fuzz::cli::{MAX_FIELD_BYTES, MAX_ROWS};
use tokenvault_fuzz::expand::segments;
use tokenvault_fuzz::{process_root, sample_tokens, scratch_dir, sdk_csv, sled_dir, PASSPHRASE};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    fs::create_dir_all(&dir).expect("corpus dir");
    fs::write(dir.join(name), bytes).expect("write seed");
}

/// The `meta/header` value of a vault created with `kdf` (and, if given, re-keyed to a new
/// passphrase).
fn header_of(kdf: KdfParams, new_passphrase: Option<&str>) -> Vec<u8> {
    let tmp = scratch_dir("seed-");
    let path = tmp.path().join("vault");
    let vault = VaultOptions::new()
        .kdf(kdf)
        .durable(false)
        .create(&path, PASSPHRASE)
        .expect("create");
    if let Some(p) = new_passphrase {
        vault.change_passphrase(p).expect("change passphrase");
    }
    drop(vault);
    let db = sled::open(sled_dir(&path)).expect("sled open");
    let header = db
        .open_tree("meta")
        .expect("meta")
        .get("header")
        .expect("get")
        .expect("a header");
    header.to_vec()
}

/// A deterministic byte stream (xorshift) for the structured targets' seeds: any bytes are
/// a valid input there; these just give the fuzzer several shapes to start from.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn main() {
    // header: the floor KDF, a changed passphrase, the recommended KDF.
    write("header", "floor", &header_of(KdfParams::FLOOR, None));
    write(
        "header",
        "rewrapped",
        &header_of(KdfParams::FLOOR, Some("another")),
    );
    write("header", "recommended", &header_of(KdfParams::RECOMMENDED, None));

    // record and token_decode: each sample token, plus an empty one.
    let mut tokens = sample_tokens();
    tokens.push(OAuthToken::default());
    for (i, token) in tokens.iter().enumerate() {
        let plain = encode_token(token).expect("encode");
        write("token_decode", &format!("token-{i}"), &plain);
        let sealed = seal_record(token).expect("seal");
        write("record", &format!("record-{i}"), &sealed);
    }

    // generation_pointer: valid pointers, and near misses.
    for n in [1u64, 2, 10, 4_294_967_296, u64::MAX] {
        write("generation_pointer", &format!("gen-{n}"), &encode_pointer(n));
    }
    write(
        "generation_pointer",
        "leading-zero",
        b"tokenvault generation 01\n",
    );
    write("generation_pointer", "no-newline", b"tokenvault generation 7");

    // quarantine_entry: an entry labelled with an id, one without, and a bare key.
    for (i, id) in [Some("quarantined-id"), None].into_iter().enumerate() {
        write(
            "quarantine_entry",
            &format!("entry-{i}"),
            &encode_quarantine_entry(id, b"damaged record bytes"),
        );
    }
    write("quarantine_entry", "short", &[36u8; 40]);

    // vault_files and differential: structured (`arbitrary`) inputs of several lengths.
    for (i, len) in [16usize, 64, 128, 256, 512, 1024].into_iter().enumerate() {
        write("vault_files", &format!("noise-{len}"), &noise(i as u64 + 1, len));
        write("sled_log", &format!("noise-{len}"), &noise(i as u64 + 301, len));
        write(
            "differential",
            &format!("noise-{len}"),
            &noise(i as u64 + 101, len),
        );
    }
    import_csv_seeds();
    save_json_seeds();
    etcd_responses_seeds();
    // import_sqlite and import_differential: structured (`arbitrary`) inputs.
    for (i, len) in [16usize, 64, 128, 256, 512, 1024, 2048].into_iter().enumerate() {
        write(
            "import_sqlite",
            &format!("noise-{len}"),
            &noise(i as u64 + 201, len),
        );
        write(
            "import_differential",
            &format!("noise-{len}"),
            &noise(i as u64 + 301, len),
        );
    }
    std::fs::remove_dir_all(process_root()).expect("remove the scratch dir");
    println!(
        "seeds written under {}",
        Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").display()
    );
}

/// The sample tokens, and one whose values the CSV must quote.
fn csv_tokens() -> Vec<OAuthToken> {
    let mut tokens = sample_tokens();
    tokens.push(
        OAuthToken::default()
            .with_id("id-quoted")
            .with_user_name("dan, \"the man\"")
            .with_refresh_token("two\r\nlines\nand a \r")
            .with_expiry_time(0),
    );
    tokens
}

fn import_csv_seeds() {
    let t = "import_csv";
    let header = sdk_csv::HEADER.join(",");
    write(t, "sdk", &sdk_csv::export(&csv_tokens()));
    write(
        t,
        "bom-lf-blank-lines",
        format!("\u{FEFF}{header}\n\n1,alice,,,,a,,1764000000000,,\n\r\n2,bob,,,r,,,,,\n").as_bytes(),
    );
    write(
        t,
        "shuffled-redirect-url",
        b"api_domain,redirect_url,expiry_time,grant_token,access_token,refresh_token,client_secret,\
          client_id,user_name,id\r\nd,u, -5 ,g,,,,,,7",
    );
    write(
        t,
        "rejected-expiry",
        format!(
            "{header}\r\n1,a,,,,t,,soon,,\r\n2,b,,,,t,,1.5,,\r\n3,c,,,,t,,99999999999999999999,,\r\n\
             4,d,,,,t,,\"\r\n\",,\r\n"
        )
        .as_bytes(),
    );
    for (name, body) in [
        ("unclosed-quote", "1,\"a,,,,,,,,\r\n"),
        ("quote-in-field", "1,a\"b,,,,,,,,\r\n"),
        ("text-after-quote", "1,\"a\"b,,,,,,,,\r\n"),
        ("stray-cr", "1,a\rb,,,,,,,,\r\n"),
        ("too-many-fields", "1,,,,,,,,,,\r\n"),
        ("too-few-fields", "1,,,\r\n"),
    ] {
        write(t, name, format!("{header}\r\n{body}").as_bytes());
    }
    write(
        t,
        "not-utf8",
        &[header.as_bytes(), b"\r\n1,\xff,,,,,,,,\r\n"].concat(),
    );
    write(t, "unknown-column", b"id,user_name,colour\r\n");
    write(t, "duplicate-column", b"id,id\r\n");
    write(t, "missing-column", b"id,user_name\r\n");
    write(
        t,
        "no-header",
        b"1,alice@example.com,1000.X,1000.ab3d0c9f.secret\r\n",
    );
    write(t, "empty", b"");
    // The caps, reached by repetition.
    let head = format!("{header}\r\n");
    let head = head.as_bytes();
    let field_cap = u32::try_from(MAX_FIELD_BYTES).expect("a 4 MiB cap");
    write(
        t,
        "field-at-cap",
        &segments(&[(head, 1), (b"1,", 1), (b"x", field_cap), (b",,,,,,,,\r\n", 1)]),
    );
    write(
        t,
        "field-over-cap",
        &segments(&[(head, 1), (b"1,", 1), (b"x", field_cap + 1), (b",,,,,,,,\r\n", 1)]),
    );
    let mut record = vec![(head, 1)];
    for _ in 0..5 {
        record.extend([(&b"x"[..], field_cap), (b",", 1)]);
    }
    record.push((b",,,,\r\n", 1));
    write(t, "record-over-cap", &segments(&record));
    let rows = u32::try_from(MAX_ROWS).expect("a million rows");
    let empty_row: &[u8] = b",,,,,,,,,\r\n";
    // One row past the cap (the millionth row passes, the next is refused). No seed with
    // exactly a million rows: accepted, they take over ten seconds to check, read and
    // round-trip, and the fuzzer would spend its time on the seed's offspring.
    write(t, "rows-over-cap", &segments(&[(head, 1), (empty_row, rows + 1)]));
}

fn save_json_seeds() {
    let t = "save_json";
    let tokens = sample_tokens();
    write(t, "object", &serde_json::to_vec(&tokens[0]).expect("json"));
    write(t, "array", &serde_json::to_vec_pretty(&tokens).expect("json"));
    for (name, json) in [
        (
            "redacted",
            r#"[{"access_token":"t"},{"access_token":"t","client_secret":"[REDACTED]"}]"#,
        ),
        ("nothing-to-store", r#"{"user_name":"u","access_token":""}"#),
        ("empty-array", "[]"),
        ("unknown-field", r#"{"user":"u"}"#),
        ("duplicate-field", r#"{"access_token":"a","access_token":"b"}"#),
        (
            "wrong-type",
            r#"[{"user_name":"u"},{"access_token":"t","expiry_time":"x"}]"#,
        ),
        (
            "fields-as-array",
            r#"[[null,"u",null,null,null,"t",null,5,null,null]]"#,
        ),
        (
            "escapes",
            r#"{"id":"\u0000\ud83d\udd11\"\\","refresh_token":"r\n","expiry_time":-9223372036854775808}"#,
        ),
        ("nulls", r#"{"id":null,"grant_token":"g","expiry_time":null}"#),
        ("trailing", r#"{"access_token":"t"} {}"#),
        ("string", r#""a string""#),
    ] {
        write(t, name, json.as_bytes());
    }
    let rows = u32::try_from(MAX_ROWS).expect("a million tokens");
    write(
        t,
        "tokens-at-cap",
        &segments(&[
            (b"[", 1),
            (br#"{"access_token":"t"},"#, rows - 1),
            (br#"{"access_token":"t"}]"#, 1),
        ]),
    );
    write(
        t,
        "tokens-over-cap",
        &segments(&[(b"[", 1), (b"{},", rows), (b"{}]", 1)]),
    );
}

/// A `meta/header` value with fixed fields (the layout of docs/format.md, the floor KDF,
/// zeros for the wrapped key and the MAC, which parsing does not check): it parses.
fn fixed_header() -> Vec<u8> {
    let kdf = KdfParams::FLOOR;
    let mut h = b"TKNVAULT".to_vec();
    h.extend_from_slice(&1u16.to_be_bytes());
    h.extend_from_slice(&[0x11; 16]);
    h.push(1);
    for n in [kdf.memory_kib, kdf.iterations, kdf.parallelism] {
        h.extend_from_slice(&n.to_be_bytes());
    }
    h.push(32);
    h.extend_from_slice(&[0x22; 32]);
    h.extend_from_slice(&1u32.to_be_bytes());
    h.extend_from_slice(&[0x33; 12]);
    h.extend_from_slice(&[0; 48 + 32]);
    let sum = Sha256::digest(&h);
    h.extend_from_slice(&sum);
    h
}

/// An `etcd_responses` input: the length of the tree prefix to strip, then the answer.
fn etcd_input(strip: &[u8], answer: &impl Message) -> Vec<u8> {
    let mut out = vec![u8::try_from(strip.len()).expect("a short prefix")];
    out.extend_from_slice(&answer.encode_to_vec());
    out
}

fn kv(key: &[u8], value: &[u8], revision: i64) -> PbKeyValue {
    PbKeyValue {
        key: key.to_vec(),
        value: value.to_vec(),
        create_revision: revision,
        mod_revision: revision,
        version: 1,
        lease: 0,
    }
}

fn range(kvs: Vec<PbKeyValue>, more: bool) -> PbRangeResponse {
    let count = i64::try_from(kvs.len()).expect("a few keys") + i64::from(more);
    PbRangeResponse {
        header: Some(header(42)),
        kvs,
        more,
        count,
    }
}

fn header(revision: i64) -> PbResponseHeader {
    PbResponseHeader {
        cluster_id: 0x1000,
        member_id: 0x2000,
        revision,
        raft_term: 3,
    }
}

fn txn(succeeded: bool, responses: Vec<Option<PbTxnOpResponse>>) -> PbTxnResponse {
    PbTxnResponse {
        header: Some(header(42)),
        succeeded,
        responses: responses
            .into_iter()
            .map(|response| PbResponseOp { response })
            .collect(),
    }
}

fn ranges(rs: Vec<PbRangeResponse>) -> Vec<Option<PbTxnOpResponse>> {
    rs.into_iter()
        .map(|r| Some(PbTxnOpResponse::ResponseRange(r)))
        .collect()
}

/// Answers shaped as the cluster gives them to the etcd engine (its keys as in
/// docs/format.md, "The etcd layout", under the prefix `vaults/portal`): the probe of a
/// failed transaction, reads of one key, scan pages, and answers of the wrong shape.
fn etcd_responses_seeds() {
    let t = "etcd_responses";
    let pointer = b"vaults/portal/current";
    let freeze = b"vaults/portal/frozen";
    let token = [0x5a; 16];
    let none: &[u8] = b"";
    // The probe: the pointer (absent: generation 0) and the freeze.
    let probe =
        |p: Vec<PbKeyValue>, f: Vec<PbKeyValue>| txn(false, ranges(vec![range(p, false), range(f, false)]));
    write(t, "probe-generation-0", &etcd_input(none, &probe(vec![], vec![])));
    write(
        t,
        "probe-pointer",
        &etcd_input(none, &probe(vec![kv(pointer, b"7", 40)], vec![])),
    );
    write(
        t,
        "probe-pointer-frozen",
        &etcd_input(
            none,
            &probe(vec![kv(pointer, b"7", 40)], vec![kv(freeze, &token, 41)]),
        ),
    );
    write(
        t,
        "probe-frozen-generation-0",
        &etcd_input(none, &probe(vec![], vec![kv(freeze, &token, 41)])),
    );
    write(
        t,
        "probe-pointer-max",
        &etcd_input(
            none,
            &probe(vec![kv(pointer, u64::MAX.to_string().as_bytes(), 40)], vec![]),
        ),
    );
    write(
        t,
        "probe-pointer-leading-zero",
        &etcd_input(none, &probe(vec![kv(pointer, b"07", 40)], vec![])),
    );
    // Reads of one key: the header of generation 0, a record of generation 7.
    let meta = b"vaults/portal/meta/";
    let header_key = [&meta[..], b"header"].concat();
    write(
        t,
        "get-header",
        &etcd_input(
            meta,
            &txn(
                true,
                ranges(vec![range(vec![kv(&header_key, &fixed_header(), 5)], false)]),
            ),
        ),
    );
    write(
        t,
        "get-absent",
        &etcd_input(meta, &txn(true, ranges(vec![range(vec![], false)]))),
    );
    let tokens_tree = b"vaults/portal/gen.7/tokens/";
    let slot = [0xa5u8; 32];
    let slot_key = [&tokens_tree[..], &slot].concat();
    let samples = sample_tokens();
    let records: Vec<Vec<u8>> = samples.iter().map(|t| seal_record(t).expect("seal")).collect();
    write(
        t,
        "get-record",
        &etcd_input(
            tokens_tree,
            &txn(
                true,
                ranges(vec![range(vec![kv(&slot_key, &records[1], 9)], false)]),
            ),
        ),
    );
    // A scan's first page (more to come) and a later page, keys under the tree's prefix.
    let page: Vec<PbKeyValue> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut key = slot_key.clone();
            key.push(u8::try_from(i).expect("a few records"));
            kv(&key, r, 10 + i as i64)
        })
        .collect();
    write(
        t,
        "scan-first-page",
        &etcd_input(tokens_tree, &txn(true, ranges(vec![range(page.clone(), true)]))),
    );
    write(
        t,
        "scan-later-page",
        &etcd_input(tokens_tree, &range(page[2..].to_vec(), false)),
    );
    let quarantine_tree = b"vaults/portal/quarantine/";
    // An entry without an id label (a label is sealed under a random nonce: this seed
    // stays the same from run to run).
    let entry = encode_quarantine_entry(None, &records[1]);
    let (len, rest) = entry.split_first().expect("an entry");
    let (key, value) = rest.split_at(usize::from(*len));
    write(
        t,
        "scan-quarantine-page",
        &etcd_input(
            quarantine_tree,
            &range(vec![kv(&[&quarantine_tree[..], key].concat(), value, 20)], false),
        ),
    );
    // Wrong shapes: a key shorter than the tree's prefix, results that are not ranges, one
    // without a result, three ranges where one or two were asked, an empty answer.
    write(
        t,
        "page-key-outside-tree",
        &etcd_input(
            tokens_tree,
            &range(
                vec![kv(b"vaults/portal/", b"v", 3), kv(&slot_key, b"v", 4)],
                false,
            ),
        ),
    );
    write(
        t,
        "txn-put-and-delete",
        &etcd_input(
            none,
            &txn(
                true,
                vec![
                    Some(PbTxnOpResponse::ResponsePut(PbPutResponse {
                        header: Some(header(43)),
                        prev_kv: Some(kv(pointer, b"7", 40)),
                    })),
                    Some(PbTxnOpResponse::ResponseDeleteRange(PbDeleteResponse {
                        header: Some(header(43)),
                        deleted: 1,
                        prev_kvs: vec![kv(freeze, &token, 41)],
                    })),
                ],
            ),
        ),
    );
    write(
        t,
        "txn-result-missing",
        &etcd_input(
            none,
            &txn(false, vec![None, ranges(vec![range(vec![], false)]).remove(0)]),
        ),
    );
    write(
        t,
        "txn-three-ranges",
        &etcd_input(
            none,
            &txn(
                false,
                ranges(vec![
                    range(vec![kv(pointer, b"2", 40)], false),
                    range(vec![], false),
                    range(vec![kv(&slot_key, &records[0], 9)], false),
                ]),
            ),
        ),
    );
    write(
        t,
        "txn-nested",
        &etcd_input(
            none,
            &txn(
                true,
                vec![Some(PbTxnOpResponse::ResponseTxn(probe(
                    vec![kv(pointer, b"3", 40)],
                    vec![],
                )))],
            ),
        ),
    );
    write(t, "empty", &[0]);
}
