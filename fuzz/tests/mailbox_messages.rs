//! The mailbox target's seeds: genuine frames must have effects (so the
//! target reaches past the decoder and the signature checks). Regenerate
//! the seeds of
//! `fuzz/corpus/mailbox_messages/` with
//! `cargo test -p shoal-fuzz-targets --test mailbox_messages -- --ignored`.

use std::path::PathBuf;

use shoal_fuzz_targets::mailbox;

#[test]
fn genuine_frames_have_effects() {
    let frames = mailbox::genuine_frames();
    let all: Vec<&[u8]> = frames.iter().map(|(_, f)| &f[..]).collect();
    // Each request is answered; the answer and the push become events.
    assert_eq!(mailbox::deliver(&all, true), frames.len());
    // Without a subscription, the push is ignored.
    assert_eq!(mailbox::deliver(&all, false), frames.len() - 1);
    for (name, frame) in &frames {
        assert_eq!(mailbox::deliver(&[frame], true), 1, "{name}");
    }
}

#[test]
#[ignore = "writes the seed corpus"]
fn write_seeds() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus/mailbox_messages");
    std::fs::create_dir_all(&dir).expect("corpus directory");
    let frames = mailbox::genuine_frames();
    let prefixed = |frames: &[&[u8]]| -> Vec<u8> {
        frames
            .iter()
            .flat_map(|f| {
                let len = u16::try_from(f.len()).expect("seed frames are small");
                len.to_be_bytes().into_iter().chain(f.iter().copied())
            })
            .collect()
    };
    for (name, frame) in &frames {
        let mut seed = vec![0u8];
        seed.extend(prefixed(&[frame]));
        std::fs::write(dir.join(name), seed).expect("write seed");
        let mut decode = vec![2u8];
        decode.extend_from_slice(frame);
        std::fs::write(dir.join(format!("decode_{name}")), decode).expect("write seed");
    }
    let all: Vec<&[u8]> = frames.iter().map(|(_, f)| &f[..]).collect();
    let mut seed = vec![1u8];
    seed.extend(prefixed(&all));
    std::fs::write(dir.join("all_subscribed"), seed).expect("write seed");
}
