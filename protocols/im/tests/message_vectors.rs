//! The message, payload, padding and envelope vectors printed in
//! docs/PROTOCOL.md, section 11.
#![allow(clippy::unwrap_used)]

use shoal_identity::Keypair;
use shoal_im::envelope::{Envelope, SessionId, SessionRef, pad, unpad};
use shoal_im::message::{MessageKind, Payload};
use shoal_im::ratchet::HEADER_LEN;
use shoal_im::x3dh::InitialHeader;
use shoal_im::{Device, Message, MessageId, UserId};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sample() -> Message {
    let sender = UserId::new(Keypair::from_secret_bytes(&[0x31; 32]).public());
    let recipient = UserId::new(Keypair::from_secret_bytes(&[0x36; 32]).public());
    let prev = Message {
        kind: MessageKind::Text,
        sender,
        recipient,
        counter: 0,
        timestamp_ms: 1_700_000_000_000,
        prev: None,
        deps: vec![],
        body: b"hi".to_vec(),
    };
    Message {
        kind: MessageKind::Text,
        sender,
        recipient,
        counter: 1,
        timestamp_ms: 1_700_000_001_000,
        prev: Some(prev.id()),
        deps: vec![MessageId([0xab; 32])],
        body: b"hello".to_vec(),
    }
}

#[test]
fn message_vector() {
    let first = Message {
        counter: 0,
        timestamp_ms: 1_700_000_000_000,
        prev: None,
        deps: vec![],
        body: b"hi".to_vec(),
        ..sample()
    };
    let m = sample();
    println!(
        "first {}\nfirst id {}",
        hex(&first.encode()),
        hex(&first.id().0)
    );
    println!("second {}\nsecond id {}", hex(&m.encode()), hex(&m.id().0));
    assert_eq!(Message::decode(&m.encode()).unwrap(), m);
    assert_eq!(hex(&first.id().0), FIRST_ID);
    assert_eq!(hex(&m.encode()), SECOND);
    assert_eq!(hex(&m.id().0), SECOND_ID);
}

#[test]
fn payload_and_padding_vectors() {
    let ack = Payload::Ack(vec![MessageId([0x11; 32])]).encode();
    let resend = Payload::Resend { from: 3, to: 5 }.encode();
    println!("ack {}\nresend {}", hex(&ack), hex(&resend));
    assert_eq!(hex(&resend), RESEND);
    assert_eq!(hex(&ack[..3]), "020001");
    let padded = pad(&resend).unwrap();
    assert_eq!(padded.len(), 256);
    assert_eq!(hex(&padded[..21]), format!("00000011{RESEND}"));
    assert!(padded[21..].iter().all(|&b| b == 0));
    assert_eq!(unpad(&padded).unwrap(), &resend[..]);
    assert_eq!(pad(&[0; 252]).unwrap().len(), 256);
    assert_eq!(pad(&[0; 253]).unwrap().len(), 1024);
}

/// The device of the envelope and reset request vectors: user seed
/// 32 × `31`, device seed 32 × `32`, X25519 identity 32 × `33`.
fn vector_device() -> Device {
    let user = Keypair::from_secret_bytes(&[0x31; 32]);
    Device::new(
        &user,
        Keypair::from_secret_bytes(&[0x32; 32]),
        [0x33; 32],
        1_700_000_000,
    )
}

#[test]
fn session_id_and_envelope_vectors() {
    let device = vector_device();
    let header = InitialHeader {
        sender: device.certificate().clone(),
        ephemeral: [0x44; 32],
        prekey_id: 1,
    };
    let id = SessionId::of(&header);
    println!("session id {}", hex(&id.0));
    assert_eq!(hex(&id.0), SESSION_ID);
    let recipient = Keypair::from_secret_bytes(&[0x35; 32]).peer_id();
    let envelope = Envelope {
        recipient,
        session: SessionRef::Known(id),
        ratchet: vec![0x55; HEADER_LEN + 256 + 16],
    };
    let bytes = envelope.encode();
    println!("envelope prefix {}", hex(&bytes[..50]));
    assert_eq!(bytes.len(), 2 + 32 + 16 + HEADER_LEN + 256 + 16);
    assert_eq!(hex(&bytes[..50]), ENVELOPE_PREFIX);
    assert_eq!(Envelope::decode(&bytes).unwrap(), envelope);
}

const FIRST_ID: &str = "c7a4408ec5dc380486935573e53aeecdc2123982790da8f1b420eca091fc0b3d";
const SECOND: &str = concat!(
    "0101",
    "48075a597e721a156e2e0799de5cc0c5324dc6e7eaf1cdd46250868ec53215dd",
    "68f4b6017d0f876a55c80a82b8388a54aad264d367269e2de8be079c935b5f96",
    "0000000000000001",
    "0000018bcfe56be8",
    "c7a4408ec5dc380486935573e53aeecdc2123982790da8f1b420eca091fc0b3d",
    "01",
    "abababababababababababababababababababababababababababababababab",
    "00000005",
    "68656c6c6f"
);
const SECOND_ID: &str = "9a4ffed4fe8254570c2eb9d9967888ce85bd537e9adb15592ec3434e3f6624c4";
const RESEND: &str = "0400000000000000030000000000000005";
const SESSION_ID: &str = "20643533f55dab6c6c4fc1a63570102c";
const ENVELOPE_PREFIX: &str = concat!(
    "0102",
    "a6d2455ea3a5771aba9fcb037924114c92f9f325049f6b4269e739d9048bb869",
    "20643533f55dab6c6c4fc1a63570102c"
);

#[test]
fn recover_and_echo_vectors() {
    let recover = Payload::Recover { from: 3 }.encode();
    let echo = Payload::Echo {
        last: 7,
        message: sample().encode(),
    }
    .encode();
    println!("recover {}\necho prefix {}", hex(&recover), hex(&echo[..9]));
    assert_eq!(hex(&recover), RECOVER);
    assert_eq!(hex(&echo), format!("060000000000000007{SECOND}"));
    assert_eq!(
        Payload::decode(&recover).unwrap(),
        Payload::Recover { from: 3 }
    );
    // An echo claiming a counter above its own `last` is malformed.
    let bad = Payload::Echo {
        last: 0,
        message: sample().encode(),
    }
    .encode();
    assert!(Payload::decode(&bad).is_err());
}

#[test]
fn reset_request_vector() {
    use shoal_im::reset::{RESET_REQUEST_LEN, ResetRequest};
    let device = vector_device();
    let (prekey, _) = shoal_im::x3dh::signed_prekey(&device, 2, [0x34; 32]);
    let request = ResetRequest {
        recipient: Keypair::from_secret_bytes(&[0x35; 32]).peer_id(),
        session: SessionId([0x5a; 16]),
        nonce: [0x6b; 16],
        bundle: shoal_im::PrekeyBundle {
            certificate: device.certificate().clone(),
            prekey,
        },
    };
    let bytes = request.sign(&device);
    println!(
        "reset prefix {}\nsignature {}",
        hex(&bytes[..66]),
        hex(&bytes[bytes.len() - 64..])
    );
    assert_eq!(bytes.len(), RESET_REQUEST_LEN);
    assert_eq!(RESET_REQUEST_LEN, 400);
    assert_eq!(hex(&bytes[..66]), RESET_PREFIX);
    assert_eq!(&bytes[66..336], &request.bundle.encode()[..]);
    assert_eq!(hex(&bytes[336..]), RESET_SIGNATURE);
    assert_eq!(ResetRequest::decode(&bytes).unwrap(), request);
}

const RECOVER: &str = "050000000000000003";
const RESET_PREFIX: &str = concat!(
    "0103",
    "a6d2455ea3a5771aba9fcb037924114c92f9f325049f6b4269e739d9048bb869",
    "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
    "6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b"
);
const RESET_SIGNATURE: &str = concat!(
    "172cc79e9a04f0a129fbcd89bfa91fdc03f3d87d64b41e13ee2288de5a21fa01",
    "fa051d8e3c236fcb2120c23efa9c2726b16ff2d01438683ae884b3518187b504"
);

#[test]
fn safety_number_vector() {
    let a = UserId::new(Keypair::from_secret_bytes(&[0x31; 32]).public());
    let b = UserId::new(Keypair::from_secret_bytes(&[0x36; 32]).public());
    let number = shoal_im::SafetyNumber::of(&a, &b);
    println!("safety number {number}");
    assert_eq!(number, shoal_im::SafetyNumber::of(&b, &a));
    assert_eq!(number.to_string(), SAFETY_NUMBER);
}

const SAFETY_NUMBER: &str =
    "58489 09815 19416 46947 50388 82433 07315 67620 71040 81812 81627 82977";
