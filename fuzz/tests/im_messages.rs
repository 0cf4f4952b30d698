//! The messenger target's scenario and seeds.
//!
//! The seeds of `fuzz/corpus/im_messages/` hold real envelopes, which
//! make_seeds.py cannot produce; regenerate them with
//! `cargo test -p shoal-fuzz-targets --test im_messages -- --ignored`.

use std::path::PathBuf;

use shoal_fuzz_targets::im;

/// The property "no message from a tampered envelope" is only worth
/// something if genuine envelopes do show messages.
#[test]
fn genuine_envelopes_are_accepted_and_tampered_ones_are_not() {
    let f = im::fixture();
    assert!(f.genuine.iter().any(|g| !g.established));
    assert!(f.genuine.iter().any(|g| g.established));
    for g in &f.genuine {
        let shown = im::deliver(g.established, &g.bytes);
        // Alone, a message whose predecessor is missing is held.
        let expected = usize::from(g.name.ends_with("chat"));
        assert_eq!(shown, expected, "{}", g.name);
        for at in [1, 2, 40, g.bytes.len() / 2, g.bytes.len() - 1] {
            let mut bad = g.bytes.clone();
            bad[at] ^= 0x80;
            assert_eq!(im::deliver(g.established, &bad), 0, "{} at {at}", g.name);
        }
    }
}

/// Every seed runs cleanly.
#[test]
fn seeds_run() {
    for (_, data) in im::im_seeds() {
        shoal_fuzz_targets::im_messages(&data);
    }
}

/// Writes the seeds into `fuzz/corpus/im_messages/`.
#[test]
#[ignore = "writes the seed corpus"]
fn write_seeds() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus/im_messages");
    std::fs::create_dir_all(&dir).expect("create corpus directory");
    for (name, data) in im::im_seeds() {
        std::fs::write(dir.join(name), data).expect("write seed");
    }
}
