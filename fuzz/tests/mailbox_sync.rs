//! The sync target's seeds: genuine sync frames must be answered (so the
//! target reaches past the decoder, the membership rules and the proof
//! checks). Regenerate the seeds of `fuzz/corpus/mailbox_sync/` with
//! `cargo test -p shoal-fuzz-targets --test mailbox_sync -- --ignored`.

use std::path::PathBuf;

use shoal_fuzz_targets::mailbox_sync;

#[test]
fn genuine_sync_frames_are_answered() {
    let frames = mailbox_sync::genuine_frames();
    for (name, frame) in &frames {
        let effects = mailbox_sync::deliver(&[frame]);
        // The first message and the need are answered; the hand-off's two
        // envelopes and tombstone are taken, silently.
        let expected = if *name == "handoff" { 3 } else { 1 };
        assert_eq!(effects, expected, "{name}");
    }
}

#[test]
#[ignore = "writes the seed corpus"]
fn write_seeds() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus/mailbox_sync");
    std::fs::create_dir_all(&dir).expect("corpus directory");
    let frames = mailbox_sync::genuine_frames();
    let mut all = vec![1u8];
    for (name, frame) in &frames {
        let len = u16::try_from(frame.len()).expect("seed frames are small");
        let mut one = vec![1u8];
        one.extend(len.to_be_bytes());
        one.extend_from_slice(frame);
        std::fs::write(dir.join(name), &one).expect("write seed");
        all.extend_from_slice(&one[1..]);
        let mut decode = vec![2u8];
        decode.extend_from_slice(frame);
        std::fs::write(dir.join(format!("decode_{name}")), decode).expect("write seed");
    }
    std::fs::write(dir.join("all"), all).expect("write seed");
    // Ranges: a first message of fingerprints, and of a list.
    let set = shoal_mailbox::sync::ItemSet::new(
        (0..30u8)
            .map(|i| shoal_mailbox::sync::SyncItem {
                key: shoal_mailbox::sync::SyncKey {
                    expiry: 1_800_000_000 + u64::from(i),
                    hash: shoal_mailbox::EnvelopeHash::of(&[i]),
                },
                state: shoal_mailbox::sync::State::Held,
            })
            .collect(),
    );
    let mut ranges = vec![0u8];
    ranges.extend(shoal_mailbox::sync::encode_ranges(&set.initiate()));
    std::fs::write(dir.join("ranges_fingerprints"), ranges).expect("write seed");
    let mut list = vec![0u8];
    list.extend(shoal_mailbox::sync::encode_ranges(&set.list_all()));
    std::fs::write(dir.join("ranges_list"), list).expect("write seed");
}
