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
    for to in [
        im::Bob::Fresh,
        im::Bob::Established,
        im::Bob::Restored,
        im::Bob::Stranger,
    ] {
        assert!(
            f.genuine.iter().any(|g| g.to == to),
            "no envelope for {to:?}"
        );
    }
    assert!(f.genuine.iter().any(|g| g.name == "reset_request"));
    assert!(f.genuine.iter().any(|g| g.name == "known_echo"));
    let mut echo_effects = 0;
    for g in &f.genuine {
        let effects = im::deliver(g.to, &g.bytes);
        // Alone, a message whose predecessor is missing is held; a reset
        // request replaces the session; an echo brings back one of bob's
        // lost messages (and renumbers what he wrote on its counter).
        match g.name {
            "initial_chat" | "known_chat" => assert_eq!(effects, 1, "{}", g.name),
            "reset_request" => assert_eq!(effects, 1, "{}", g.name),
            // A request, then the message shown once bob accepts it.
            "request_chat" => assert_eq!(effects, 2, "{}", g.name),
            // Alone, the echo of a message whose predecessor bob lost for
            // good (it never reached alice) is refused; the first one is
            // taken.
            "known_echo" => echo_effects += effects,
            _ => assert_eq!(effects, 0, "{}", g.name),
        }
        for at in [1, 2, 40, g.bytes.len() / 2, g.bytes.len() - 1] {
            let mut bad = g.bytes.clone();
            bad[at] ^= 0x80;
            assert_eq!(im::deliver(g.to, &bad), 0, "{} at {at}", g.name);
        }
    }
    assert!(echo_effects >= 1, "no echo was taken");
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
