//! Time and size limits: stalled peers are dropped at the handshake timeout,
//! oversized declared lengths are refused before their body is read.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use std::time::Duration;

use common::{config, within};
use shoal_secio::{
    CipherSuite::ChaChaPoly, DEFAULT_MAX_HANDSHAKE_MESSAGE, HandshakeError, handshake_inbound,
    handshake_outbound,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(3);

#[tokio::test(start_paused = true)]
async fn silent_initiator_is_dropped_at_the_timeout() {
    let b = config(&[ChaChaPoly]).with_handshake_timeout(TIMEOUT);
    let (_silent, y) = tokio::io::duplex(4096);
    let started = tokio::time::Instant::now();
    let result = within(handshake_inbound(y, &b)).await;
    assert!(matches!(result, Err(HandshakeError::Timeout(t)) if t == TIMEOUT));
    assert_eq!(started.elapsed(), TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn responder_stalling_mid_handshake_is_dropped() {
    let a = config(&[ChaChaPoly]).with_handshake_timeout(TIMEOUT);
    let (x, mut y) = tokio::io::duplex(4096);
    let (initiator, _) = within(async {
        tokio::join!(handshake_outbound(x, &a, None), async {
            // Read the hello, then stall with the connection open.
            let mut hello = [0u8; 36];
            y.read_exact(&mut hello).await.unwrap();
            y
        })
    })
    .await;
    assert!(matches!(initiator, Err(HandshakeError::Timeout(_))));
}

#[tokio::test(start_paused = true)]
async fn initiator_stalling_before_final_message_is_dropped() {
    // A responder facing an initiator that sends half of message 3.
    let b = config(&[ChaChaPoly]).with_handshake_timeout(TIMEOUT);
    let a = config(&[ChaChaPoly]);
    let (x, mut y_peer) = tokio::io::duplex(4096);
    let (responder, _) = within(async {
        tokio::join!(handshake_inbound(x, &b), async {
            // Drive a real initiator core by hand, withholding the end.
            let (state, hello) = shoal_secio::InitiatorHandshake::start(&a, None).unwrap();
            y_peer
                .write_all(&(hello.len() as u16).to_be_bytes())
                .await
                .unwrap();
            y_peer.write_all(&hello).await.unwrap();
            let mut len = [0u8; 2];
            y_peer.read_exact(&mut len).await.unwrap();
            let mut body = vec![0u8; u16::from_be_bytes(len).into()];
            y_peer.read_exact(&mut body).await.unwrap();
            let shoal_secio::handshake::InitiatorStep::Complete { message, .. } =
                state.handle(&body).unwrap()
            else {
                panic!("expected completion");
            };
            y_peer
                .write_all(&(message.len() as u16).to_be_bytes())
                .await
                .unwrap();
            y_peer
                .write_all(&message[..message.len() / 2])
                .await
                .unwrap();
            y_peer
        })
    })
    .await;
    assert!(matches!(responder, Err(HandshakeError::Timeout(_))));
}

#[tokio::test(start_paused = true)]
async fn oversized_declared_length_fails_before_reading_the_body() {
    let b = config(&[ChaChaPoly]);
    let (mut x, y) = tokio::io::duplex(4096);
    // Only the prefix is sent; the connection stays open. Waiting for the
    // body would end in a timeout instead of this error.
    let declared = DEFAULT_MAX_HANDSHAKE_MESSAGE + 1;
    x.write_all(&(declared as u16).to_be_bytes()).await.unwrap();
    let started = tokio::time::Instant::now();
    let result = within(handshake_inbound(y, &b)).await;
    assert!(matches!(
        result,
        Err(HandshakeError::MessageTooLarge { len, max })
            if len == declared && max == DEFAULT_MAX_HANDSHAKE_MESSAGE
    ));
    assert_eq!(started.elapsed(), Duration::ZERO);
    drop(x);
}

#[tokio::test(start_paused = true)]
async fn oversized_response_fails_the_initiator() {
    let a = config(&[ChaChaPoly]);
    let (x, mut y) = tokio::io::duplex(4096);
    let (initiator, _y) = within(async {
        tokio::join!(handshake_outbound(x, &a, None), async {
            let mut hello = [0u8; 36];
            y.read_exact(&mut hello).await.unwrap();
            y.write_all(&[0xff, 0xff]).await.unwrap();
            y
        })
    })
    .await;
    assert!(matches!(
        initiator,
        Err(HandshakeError::MessageTooLarge { len: 65535, .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn empty_handshake_message_is_malformed() {
    let b = config(&[ChaChaPoly]);
    let (mut x, y) = tokio::io::duplex(4096);
    x.write_all(&[0, 0]).await.unwrap();
    let result = within(handshake_inbound(y, &b)).await;
    assert!(matches!(result, Err(HandshakeError::Malformed(_))));
}

#[tokio::test(start_paused = true)]
async fn unknown_version_gets_a_refusal() {
    let b = config(&[ChaChaPoly]);
    let (mut x, y) = tokio::io::duplex(4096);
    let (result, answer) = within(async {
        tokio::join!(handshake_inbound(y, &b), async {
            x.write_all(&[0, 2, 9, 1]).await.unwrap();
            let mut answer = Vec::new();
            x.read_to_end(&mut answer).await.unwrap();
            answer
        })
    })
    .await;
    assert!(matches!(result, Err(HandshakeError::UnsupportedVersion(9))));
    assert_eq!(answer, [0, 3, 0x02, 1, 1]);
}
