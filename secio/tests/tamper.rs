//! Corrupted, replayed, reordered and garbage bytes end the connection with
//! an error, never a panic and never silently.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use std::io;

use common::{Rng, Tap, config, handshake_pair, paused_runtime, stream_error, within};
use proptest::prelude::*;
use shoal_secio::{
    CipherSuite::{AesGcm, ChaChaPoly},
    Config, HandshakeError, StreamError, handshake_inbound, handshake_outbound,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes each side writes during a clean handshake: (initiator, responder).
fn handshake_sizes(a: &Config, b: &Config) -> (u64, u64) {
    paused_runtime().block_on(async {
        let (x, y) = tokio::io::duplex(4096);
        let (sa, sb) = handshake_pair(Tap::new(x), Tap::new(y), a, b).await;
        (sa.unwrap().get_ref().written, sb.unwrap().get_ref().written)
    })
}

/// Flips `mask` into byte `offset` of one side's handshake output and
/// checks that the handshake does not succeed on both sides.
fn flip_handshake(a: &Config, b: &Config, initiator_side: bool, offset: u64, mask: u8) {
    paused_runtime().block_on(async {
        let (x, y) = tokio::io::duplex(4096);
        let (mut x, mut y) = (Tap::new(x), Tap::new(y));
        if initiator_side {
            x.flip = Some((offset, mask));
        } else {
            y.flip = Some((offset, mask));
        }
        let (sa, sb) = handshake_pair(x, y, a, b).await;
        assert!(
            sa.is_err() || sb.is_err(),
            "flip at {offset} (initiator side: {initiator_side}) went unnoticed"
        );
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn flipped_handshake_byte_fails(
        retry in any::<bool>(),
        initiator_side in any::<bool>(),
        position in any::<proptest::sample::Index>(),
        mask in 1u8..,
    ) {
        let a = config(if retry { &[AesGcm, ChaChaPoly] } else { &[ChaChaPoly] });
        let b = config(&[ChaChaPoly]);
        let (i_len, r_len) = handshake_sizes(&a, &b);
        let len = if initiator_side { i_len } else { r_len };
        let mut offset = position.index(len as usize) as u64;
        // The refused first hello's ephemeral key (bytes 4..36 on the
        // wire) is discarded unread; flip its header instead.
        if retry && initiator_side && (4..36).contains(&offset) {
            offset %= 4;
        }
        flip_handshake(&a, &b, initiator_side, offset, mask);
    }

    #[test]
    fn flipped_transport_byte_fails(position in any::<proptest::sample::Index>(), mask in 1u8..) {
        paused_runtime().block_on(async {
            let a = config(&[ChaChaPoly]);
            let b = config(&[ChaChaPoly]);
            let (x, y) = tokio::io::duplex(256 * 1024);
            let (sa, sb) = handshake_pair(Tap::new(x), y, &a, &b).await;
            let (mut sa, mut sb) = (sa.unwrap(), sb.unwrap());
            let data = Rng::new(7).bytes(100_000);
            // Two frames: 2 + 65535 and 2 + (100000 - 65519) + 16 bytes.
            let wire_len = data.len() + 2 * (2 + 16);
            let written = sa.get_ref().written;
            sa.get_mut().flip = Some((written + position.index(wire_len) as u64, mask));

            let (sent, received) = tokio::join!(
                async {
                    within(sa.write_all(&data)).await?;
                    within(sa.shutdown()).await
                },
                async {
                    let mut got = Vec::new();
                    let result = within(sb.read_to_end(&mut got)).await;
                    (result, got)
                },
            );
            sent.unwrap();
            let (result, got) = received;
            let err = result.expect_err("corruption went unnoticed");
            assert!(matches!(
                err.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
            ), "{err:?}");
            assert!(stream_error(&err).is_some(), "{err:?}");
            // Whatever was delivered before the error is authentic.
            assert_eq!(&got[..], &data[..got.len()]);
        });
    }

    #[test]
    fn garbage_to_responder_fails(garbage in proptest::collection::vec(any::<u8>(), 0..400)) {
        paused_runtime().block_on(async {
            let b = config(&[ChaChaPoly]);
            let (mut x, y) = tokio::io::duplex(4096);
            let (responder, ()) = tokio::join!(
                handshake_inbound(y, &b),
                async {
                    let _ = x.write_all(&garbage).await;
                    let _ = x.shutdown().await;
                    // Keep reading so the responder's answer never blocks.
                    let mut sink = Vec::new();
                    let _ = within(x.read_to_end(&mut sink)).await;
                },
            );
            assert!(responder.is_err());
        });
    }

    #[test]
    fn garbage_to_initiator_fails(garbage in proptest::collection::vec(any::<u8>(), 0..400)) {
        paused_runtime().block_on(async {
            let a = config(&[ChaChaPoly]);
            let (x, mut y) = tokio::io::duplex(4096);
            let (initiator, ()) = tokio::join!(
                handshake_outbound(x, &a, None),
                async {
                    let mut hello = [0u8; 36];
                    let _ = within(y.read_exact(&mut hello)).await;
                    let _ = y.write_all(&garbage).await;
                    let _ = y.shutdown().await;
                },
            );
            assert!(initiator.is_err());
        });
    }
}

#[tokio::test]
async fn replayed_frame_fails() {
    let a = config(&[ChaChaPoly]);
    let b = config(&[ChaChaPoly]);
    let (x, y) = tokio::io::duplex(64 * 1024);
    let (sa, sb) = handshake_pair(Tap::new(x), y, &a, &b).await;
    let (mut sa, mut sb) = (sa.unwrap(), sb.unwrap());

    // Capture one frame instead of sending it, then send it twice.
    sa.get_mut().capture = true;
    within(sa.write_all(b"transfer 100 coins")).await.unwrap();
    within(sa.flush()).await.unwrap();
    let tap = sa.get_mut();
    tap.capture = false;
    let frame = std::mem::take(&mut tap.captured);
    assert_eq!(frame.len(), 2 + 18 + 16);
    within(tap.write_all(&frame)).await.unwrap();
    within(tap.write_all(&frame)).await.unwrap();

    let mut got = [0u8; 18];
    within(sb.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"transfer 100 coins");
    let err = within(sb.read(&mut got)).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(matches!(stream_error(&err), Some(StreamError::Decrypt)));
    // The stream stays failed.
    let err = within(sb.read(&mut got)).await.unwrap_err();
    assert!(matches!(stream_error(&err), Some(StreamError::Poisoned)));
}

#[tokio::test]
async fn reordered_frames_fail() {
    let a = config(&[AesGcm]);
    let b = config(&[AesGcm]);
    let (x, y) = tokio::io::duplex(64 * 1024);
    let (sa, sb) = handshake_pair(Tap::new(x), y, &a, &b).await;
    let (mut sa, mut sb) = (sa.unwrap(), sb.unwrap());

    sa.get_mut().capture = true;
    within(sa.write_all(b"first")).await.unwrap();
    within(sa.flush()).await.unwrap();
    let first = std::mem::take(&mut sa.get_mut().captured);
    within(sa.write_all(b"second")).await.unwrap();
    within(sa.flush()).await.unwrap();
    let tap = sa.get_mut();
    let second = std::mem::take(&mut tap.captured);
    tap.capture = false;
    within(tap.write_all(&second)).await.unwrap();
    within(tap.write_all(&first)).await.unwrap();

    let mut buf = [0u8; 64];
    let err = within(sb.read(&mut buf)).await.unwrap_err();
    assert!(matches!(stream_error(&err), Some(StreamError::Decrypt)));
}

#[tokio::test]
async fn undersized_frame_length_fails() {
    let a = config(&[ChaChaPoly]);
    let b = config(&[ChaChaPoly]);
    let (x, y) = tokio::io::duplex(1024);
    let (sa, sb) = handshake_pair(x, y, &a, &b).await;
    let (mut sa, mut sb) = (sa.unwrap(), sb.unwrap());
    // A frame too short to carry a tag.
    within(sa.get_mut().write_all(&[0x00, 0x05, 1, 2, 3, 4, 5]))
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let err = within(sb.read(&mut buf)).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(matches!(stream_error(&err), Some(StreamError::Frame(_))));
}

#[tokio::test]
async fn peer_id_mismatch_sends_nothing_after_hello() {
    let a = config(&[ChaChaPoly]);
    let b = config(&[ChaChaPoly]);
    let someone_else = shoal_identity::Keypair::generate().peer_id();
    let (x, y) = tokio::io::duplex(4096);
    let x = Tap::new(x);
    let (initiator, responder) = within(async {
        tokio::join!(
            async {
                // Hand the tap back out to inspect what was written.
                let mut x = x;
                let result = handshake_outbound(&mut x, &a, Some(someone_else)).await;
                (result.map(|_| ()), x.written)
            },
            handshake_inbound(y, &b),
        )
    })
    .await;
    let (result, written) = initiator;
    assert!(matches!(
        result,
        Err(HandshakeError::PeerIdMismatch { expected, actual })
            if expected == someone_else && actual == b.local_peer_id()
    ));
    assert_eq!(written, 2 + 2 + 32, "only the hello left the initiator");
    // The responder never got message 3: it fails (the pipe closed).
    assert!(responder.is_err());
}
