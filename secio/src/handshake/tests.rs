//! In-memory tests of the sans-IO handshake: both roles, negotiation,
//! authentication failures and tampering.

use proptest::prelude::*;
use shoal_identity::{Keypair, PeerId, Purpose};
use zeroize::Zeroizing;

use super::{
    HandshakeOutcome, InitiatorHandshake, InitiatorStep, ResponderHandshake, ResponderStep,
};
use crate::{
    Config, HandshakeError,
    config::LocalKeys,
    payload::{HandshakePayload, PAYLOAD_VERSION},
    suite::CipherSuite::{self, AesGcm, ChaChaPoly},
};

type Side = Option<Result<HandshakeOutcome, HandshakeError>>;

/// How a simulated handshake ended. `None`: that side was still waiting
/// when its peer failed (it would see the connection close).
struct Run {
    initiator: Side,
    responder: Side,
    /// Every message body as sent (before tampering), in order.
    sent: Vec<Vec<u8>>,
}

fn config(suites: &[CipherSuite]) -> Config {
    Config::new(Keypair::generate()).with_suites(suites.iter().copied())
}

/// Runs a handshake in memory; `tamper(index, body)` may change message
/// `index` in flight.
fn run(
    init: &Config,
    init_expects: Option<PeerId>,
    resp: &Config,
    resp_expects: Option<PeerId>,
    mut tamper: impl FnMut(usize, &mut Vec<u8>),
) -> Run {
    let mut sent = Vec::new();
    let mut deliver = |mut body: Vec<u8>| {
        sent.push(body.clone());
        tamper(sent.len() - 1, &mut body);
        body
    };
    let (initiator, hello) = match InitiatorHandshake::start(init, init_expects) {
        Ok(started) => started,
        Err(e) => {
            return Run {
                initiator: Some(Err(e)),
                responder: None,
                sent,
            };
        }
    };
    // `None` once the initiator has completed.
    let mut initiator = Some(initiator);
    let mut initiator_done = None;
    let mut responder = ResponderHandshake::new(resp, resp_expects);
    let mut to_responder = deliver(hello);
    let finish = |initiator: Side, responder: Side, sent| Run {
        initiator,
        responder,
        sent,
    };
    // At most three messages reach the responder.
    for _ in 0..3 {
        let to_initiator = match responder.handle(&to_responder) {
            Err(e) => return finish(initiator_done.map(Ok), Some(Err(e)), sent),
            Ok(ResponderStep::Complete(outcome)) => {
                return finish(initiator_done.map(Ok), Some(Ok(outcome)), sent);
            }
            Ok(ResponderStep::Refuse { message, error }) => {
                let message = deliver(message);
                let result = match initiator.take() {
                    Some(state) => state.handle(&message).map(|_| refusal_completed()),
                    None => panic!("refusal after completion"),
                };
                return finish(Some(result), Some(Err(error)), sent);
            }
            Ok(ResponderStep::Send { next, message }) => {
                responder = next;
                deliver(message)
            }
        };
        let Some(state) = initiator.take() else {
            // The initiator finished but the responder wants more.
            return finish(initiator_done.map(Ok), None, sent);
        };
        match state.handle(&to_initiator) {
            Err(e) => return finish(Some(Err(e)), None, sent),
            Ok(InitiatorStep::Send { next, message }) => {
                initiator = Some(next);
                to_responder = deliver(message);
            }
            Ok(InitiatorStep::Complete { message, outcome }) => {
                initiator_done = Some(outcome);
                to_responder = deliver(message);
            }
        }
    }
    panic!("handshake did not finish in three rounds");
}

fn refusal_completed() -> HandshakeOutcome {
    panic!("a refusal must not complete the initiator")
}

fn both_ok(run: Run) -> (HandshakeOutcome, HandshakeOutcome) {
    let i = run
        .initiator
        .expect("initiator finished")
        .expect("initiator ok");
    let r = run
        .responder
        .expect("responder finished")
        .expect("responder ok");
    (i, r)
}

fn assert_keys_match(i: HandshakeOutcome, r: HandshakeOutcome) {
    let mut i = i.into_transport();
    let mut r = r.into_transport();
    let mut ct = [0u8; 64];
    let mut pt = [0u8; 64];
    let n = i.write_message(b"ping", &mut ct).unwrap();
    let m = r.read_message(&ct[..n], &mut pt).unwrap();
    assert_eq!(&pt[..m], b"ping");
    let n = r.write_message(b"pong", &mut ct).unwrap();
    let m = i.read_message(&ct[..n], &mut pt).unwrap();
    assert_eq!(&pt[..m], b"pong");
}

fn no_tamper(_: usize, _: &mut Vec<u8>) {}

#[test]
fn full_handshake_each_suite() {
    for suite in CipherSuite::ALL {
        let a = config(&[suite]);
        let b = config(&[AesGcm, ChaChaPoly]);
        let run = run(&a, Some(b.local_peer_id()), &b, None, no_tamper);
        assert_eq!(run.sent.len(), 3, "hello, accept, final");
        let (i, r) = both_ok(run);
        assert_eq!(i.remote_peer(), b.local_peer_id());
        assert_eq!(r.remote_peer(), a.local_peer_id());
        assert_eq!(i.cipher_suite(), suite);
        assert_eq!(r.cipher_suite(), suite);
        assert_keys_match(i, r);
    }
}

#[test]
fn suite_refusal_then_retry() {
    let a = config(&[AesGcm, ChaChaPoly]);
    let b = config(&[ChaChaPoly]);
    let run = run(&a, None, &b, Some(a.local_peer_id()), no_tamper);
    assert_eq!(run.sent.len(), 5, "hello, refusal, hello, accept, final");
    assert_eq!(run.sent[1], vec![0x01, 1, ChaChaPoly.id()]);
    assert_eq!(&run.sent[2][..2], &[1, ChaChaPoly.id()]);
    let (i, r) = both_ok(run);
    assert_eq!(i.cipher_suite(), ChaChaPoly);
    assert_eq!(r.cipher_suite(), ChaChaPoly);
    assert_keys_match(i, r);
}

#[test]
fn no_common_suite() {
    let a = config(&[AesGcm]);
    let b = config(&[ChaChaPoly]);
    let run = run(&a, None, &b, None, no_tamper);
    assert!(matches!(
        run.initiator,
        Some(Err(HandshakeError::NoCommonSuite { ref ours, ref theirs }))
            if ours == &[AesGcm] && theirs == &[ChaChaPoly.id()]
    ));
    // An empty local list fails at once.
    let run = run_simple(&config(&[]), &b);
    assert!(matches!(
        run.initiator,
        Some(Err(HandshakeError::NoCommonSuite { .. }))
    ));
}

fn run_simple(a: &Config, b: &Config) -> Run {
    run(a, None, b, None, no_tamper)
}

#[test]
fn second_refusal_is_an_error() {
    let a = config(&[AesGcm, ChaChaPoly]);
    let (state, _) = InitiatorHandshake::start(&a, None).unwrap();
    let step = state.handle(&[0x01, 1, ChaChaPoly.id()]).unwrap();
    let InitiatorStep::Send { next, .. } = step else {
        panic!("expected a retry");
    };
    assert!(matches!(
        next.handle(&[0x01, 1, ChaChaPoly.id()]),
        Err(HandshakeError::RepeatedSuiteRefusal)
    ));
}

#[test]
fn retried_hello_with_unlisted_suite_is_refused() {
    let a = config(&[AesGcm, ChaChaPoly]);
    let b = config(&[ChaChaPoly]);
    let run = run(&a, None, &b, None, |i, body| {
        if i == 2 {
            body[1] = AesGcm.id();
        }
    });
    assert!(matches!(
        run.responder,
        Some(Err(HandshakeError::ProtocolViolation(_)))
    ));
}

#[test]
fn version_refusal() {
    let a = config(&[ChaChaPoly]);
    let b = config(&[ChaChaPoly]);
    let run = run(&a, None, &b, None, |i, body| {
        if i == 0 {
            body[0] = 2;
        }
    });
    assert_eq!(run.sent[1], vec![0x02, 1, 1]);
    assert!(matches!(
        run.responder,
        Some(Err(HandshakeError::UnsupportedVersion(2)))
    ));
    assert!(matches!(
        run.initiator,
        Some(Err(HandshakeError::VersionRefused { ref supported })) if supported == &[1]
    ));
}

#[test]
fn expected_peer_mismatch_aborts_before_final_message() {
    let a = config(&[ChaChaPoly]);
    let b = config(&[ChaChaPoly]);
    let someone_else = Keypair::generate().peer_id();
    let run = run(&a, Some(someone_else), &b, None, no_tamper);
    // Hello and accept only: the final message (our identity) never left.
    assert_eq!(run.sent.len(), 2);
    assert!(matches!(
        run.initiator,
        Some(Err(HandshakeError::PeerIdMismatch { expected, actual }))
            if expected == someone_else && actual == b.local_peer_id()
    ));
    assert!(run.responder.is_none());
}

#[test]
fn responder_expectation_mismatch() {
    let a = config(&[ChaChaPoly]);
    let b = config(&[ChaChaPoly]);
    let someone_else = Keypair::generate().peer_id();
    let run = run(&a, None, &b, Some(someone_else), no_tamper);
    assert!(matches!(
        run.responder,
        Some(Err(HandshakeError::PeerIdMismatch { .. }))
    ));
}

#[test]
fn tampered_suite_byte_fails_the_handshake() {
    // Both suites are acceptable to the responder, so only the prologue can
    // notice that the offer was changed.
    let a = config(&[ChaChaPoly]);
    let b = config(&[ChaChaPoly, AesGcm]);
    let run = run(&a, None, &b, None, |i, body| {
        if i == 0 {
            body[1] = AesGcm.id();
        }
    });
    let Some(Err(error)) = run.initiator else {
        panic!("initiator must fail");
    };
    assert!(matches!(error, HandshakeError::Noise(_)));
    assert_eq!(error.class(), crate::FailureClass::Malformed);
    assert!(run.responder.is_none());
}

#[test]
fn tampered_refusal_fails_the_handshake() {
    // A man in the middle lists an extra suite in the refusal; the
    // initiator still picks one the responder supports, but the transcripts
    // differ.
    let a = config(&[AesGcm, ChaChaPoly]);
    let b = config(&[ChaChaPoly]);
    let run = run(&a, None, &b, None, |i, body| {
        if i == 1 {
            *body = vec![0x01, 2, ChaChaPoly.id(), 9];
        }
    });
    assert!(matches!(run.initiator, Some(Err(HandshakeError::Noise(_)))));
}

/// A config whose payload is built by `payload(identity, noise_static_public)`.
fn config_with_payload(payload: impl FnOnce(&Keypair, &[u8; 32]) -> HandshakePayload) -> Config {
    let base = config(&[ChaChaPoly]);
    let local = base.local();
    let static_public = base.noise_static_public_key();
    let mut keys = LocalKeys::new(
        local.identity.clone(),
        Zeroizing::new(*local.static_secret),
        static_public,
    );
    keys.payload = payload(&local.identity, &static_public).to_bytes();
    Config::with_local_keys(keys).with_suites([ChaChaPoly])
}

#[test]
fn signature_over_another_static_key_is_rejected() {
    let honest = config(&[ChaChaPoly]);
    let liar = config_with_payload(|id, _| HandshakePayload::sign(id, &[9; 32]));
    let run = run(&honest, None, &liar, None, no_tamper);
    assert!(matches!(
        run.initiator,
        Some(Err(HandshakeError::BadSignature))
    ));
    // And in message 3.
    let run = run_simple(&liar, &honest);
    assert!(matches!(
        run.responder,
        Some(Err(HandshakeError::BadSignature))
    ));
}

#[test]
fn signature_for_another_purpose_is_rejected() {
    let honest = config(&[ChaChaPoly]);
    let confused = config_with_payload(|id, static_public| HandshakePayload {
        version: PAYLOAD_VERSION,
        identity_key: id.public().to_bytes().to_vec(),
        identity_sig: id.sign(Purpose::PEER_RECORD, static_public).to_vec(),
    });
    let run = run(&honest, None, &confused, None, no_tamper);
    assert!(matches!(
        run.initiator,
        Some(Err(HandshakeError::BadSignature))
    ));
}

#[test]
fn someone_elses_identity_is_rejected() {
    // A payload naming another identity with that identity's signature over
    // *its* static key: not a signature over ours.
    let honest = config(&[ChaChaPoly]);
    let victim = config(&[ChaChaPoly]);
    let stolen = victim.local().payload.clone();
    let thief = config_with_payload(|_, _| prost::Message::decode(stolen.as_slice()).unwrap());
    let run = run(&honest, None, &thief, None, no_tamper);
    assert!(matches!(
        run.initiator,
        Some(Err(HandshakeError::BadSignature))
    ));
}

#[test]
fn unsupported_payload_version_is_rejected() {
    let honest = config(&[ChaChaPoly]);
    let future = config_with_payload(|id, static_public| HandshakePayload {
        version: 2,
        ..HandshakePayload::sign(id, static_public)
    });
    let run = run(&honest, None, &future, None, no_tamper);
    assert!(matches!(
        run.initiator,
        Some(Err(HandshakeError::UnsupportedPayloadVersion(2)))
    ));
}

#[test]
fn oversized_messages_are_rejected() {
    let a = config(&[ChaChaPoly]);
    let max = a.max_handshake_message();
    let big = vec![0u8; max + 1];
    let (state, _) = InitiatorHandshake::start(&a, None).unwrap();
    assert!(matches!(
        state.handle(&big),
        Err(HandshakeError::MessageTooLarge { len, max: m }) if len == max + 1 && m == max
    ));
    let responder = ResponderHandshake::new(&a, None);
    assert!(matches!(
        responder.handle(&big),
        Err(HandshakeError::MessageTooLarge { .. })
    ));
}

#[test]
fn malformed_messages_are_rejected() {
    let a = config(&[ChaChaPoly]);
    for body in [&[][..], &[1], &[1, 1], &[1, 1, 0], &[1, 9]] {
        let responder = ResponderHandshake::new(&a, None);
        let result = responder.handle(body);
        assert!(
            matches!(
                result,
                Err(HandshakeError::Malformed(_)) | Ok(ResponderStep::Send { .. })
            ),
            "{body:?}"
        );
    }
    for body in [&[][..], &[0], &[0, 1, 2], &[1], &[1, 2, 1], &[2], &[7, 0]] {
        let (state, _) = InitiatorHandshake::start(&a, None).unwrap();
        assert!(state.handle(body).is_err(), "{body:?}");
    }
}

#[test]
fn every_flipped_byte_fails_cleanly() {
    // Direct accept (three messages) and a suite retry (five messages).
    let cases = [
        (config(&[ChaChaPoly]), config(&[ChaChaPoly]), 3),
        (config(&[AesGcm, ChaChaPoly]), config(&[ChaChaPoly]), 5),
    ];
    for (a, b, messages) in &cases {
        // A clean run to learn the message sizes.
        let sizes: Vec<usize> = run_simple(a, b).sent.iter().map(Vec::len).collect();
        assert_eq!(sizes.len(), *messages);
        for (index, &size) in sizes.iter().enumerate() {
            // A refused first hello's Noise message is discarded unread
            // (only its version and suite bytes enter the prologue).
            let checked = if index == 0 && *messages == 5 {
                2
            } else {
                size
            };
            for pos in 0..checked {
                for mask in [0x01, 0x80] {
                    let run = run(a, None, b, None, |i, body| {
                        if i == index {
                            body[pos] ^= mask;
                        }
                    });
                    let both_succeeded =
                        matches!((&run.initiator, &run.responder), (Some(Ok(_)), Some(Ok(_))));
                    assert!(
                        !both_succeeded,
                        "flip in message {index} at {pos} went unnoticed"
                    );
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let a = config(&[AesGcm, ChaChaPoly]);
        let _ = ResponderHandshake::new(&a, None).handle(&body);
        let (state, _) = InitiatorHandshake::start(&a, None).unwrap();
        let _ = state.handle(&body);
    }
}
