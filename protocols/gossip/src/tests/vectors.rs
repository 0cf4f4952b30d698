//! The test vectors printed in docs/PROTOCOL.md, section 9, and the
//! decoder's limits.

use bytes::Bytes;
use shoal_identity::{Keypair, signed_input};

use crate::{
    MessageId,
    message::{self, MESSAGE_PURPOSE},
    protocol::{
        DecodeError, Graft, IHave, IWant, MAX_FRAME_SIZE, MAX_IHAVE_PER_FRAME, Prune, Rpc,
        Subscription, decode_frame, encode_frame,
    },
};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const BODY: &str = "080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c18012204636861742a0568656c6c6f";
const SIGNATURE: &str = "b03214436d3b90833165ea6daf48f8bdd8b5f05f791b6101f0c30f81f87f61c1024d3f9d2cd8d1072e44f6e7d59ba03e0c51a0440610a3da847e1b77a7a46906";
const ID: &str = "a4c95084ce476c373966c84779f454ab23861d3df93ef9e077b38e594741dab5";

/// Section 9.6. The signature and id were cross-checked with Python
/// (`cryptography` Ed25519 and `hashlib.blake2b(digest_size=32)`).
#[test]
fn documented_vectors() {
    let key = Keypair::from_secret_bytes(&[1u8; 32]);
    let topic = crate::Topic::new("chat").unwrap();
    let (id, signed) = message::sign(&key, 1, &topic, Bytes::from_static(b"hello"));
    assert_eq!(hex(&signed.body), BODY);
    assert_eq!(
        hex(&signed_input(MESSAGE_PURPOSE, &signed.body)),
        format!("16{}{BODY}", hex(b"shoal/gossip/message/1"))
    );
    assert_eq!(hex(&signed.signature), SIGNATURE);
    assert_eq!(hex(&id.0), ID);
    assert_eq!(MessageId::of_body(&unhex(BODY)), id);

    let with_message = encode_frame(Rpc {
        messages: vec![signed.clone()],
        ..Rpc::default()
    });
    assert_eq!(
        hex(&with_message),
        format!("0a791277 0a33{BODY} 1240{SIGNATURE}").replace(' ', "")
    );
    let subscribe = encode_frame(Rpc {
        subscriptions: vec![Subscription {
            subscribe: true,
            topic: "chat".into(),
        }],
        ..Rpc::default()
    });
    assert_eq!(hex(&subscribe), "0a0a0a080801120463686174");
    let control = encode_frame(Rpc {
        ihave: vec![IHave {
            topic: "chat".into(),
            ids: vec![Bytes::copy_from_slice(&id.0)],
        }],
        iwant: vec![IWant {
            ids: vec![Bytes::copy_from_slice(&id.0)],
        }],
        graft: vec![Graft {
            topic: "chat".into(),
        }],
        prune: vec![Prune {
            topic: "chat".into(),
            backoff_secs: 60,
        }],
        ..Rpc::default()
    });
    assert_eq!(
        hex(&control),
        format!(
            "0a60 1a28 0a0463686174 1220{ID} 2222 0a20{ID} 2a06 0a0463686174 3208 0a0463686174 103c"
        )
        .replace(' ', "")
    );
    for frame in [with_message, subscribe, control] {
        let rpc = decode_frame(frame.clone()).unwrap();
        assert_eq!(encode_frame(rpc), frame);
    }
    // The documented message verifies as received.
    let verified = message::verify(id, &signed, 1024).unwrap();
    assert_eq!((verified.seq, &verified.payload[..]), (1, &b"hello"[..]));
}

#[test]
fn the_decoder_enforces_its_limits() {
    assert_eq!(
        decode_frame(Bytes::from(vec![0u8; MAX_FRAME_SIZE + 1])),
        Err(DecodeError::TooLarge(MAX_FRAME_SIZE + 1))
    );
    assert!(matches!(
        decode_frame(Bytes::from_static(&[0xff, 0xff, 0xff])),
        Err(DecodeError::Malformed(_) | DecodeError::Structure(_))
    ));
    // Empty frame, and a frame with only an unknown field: unknown type.
    assert_eq!(decode_frame(Bytes::new()), Err(DecodeError::UnknownType));
    assert_eq!(
        decode_frame(Bytes::from_static(&[0x10, 0x01])),
        Err(DecodeError::UnknownType)
    );
    // An empty rpc is fine; an unknown field inside it is ignored.
    assert_eq!(
        decode_frame(Bytes::from_static(&[0x0a, 0x02, 0x78, 0x01])),
        Ok(Rpc::default())
    );
    // A group (wire type 3).
    assert!(matches!(
        decode_frame(Bytes::from_static(&[0x0b, 0x0c])),
        Err(DecodeError::Structure(_))
    ));
    // A length running past the end.
    assert!(matches!(
        decode_frame(Bytes::from_static(&[0x0a, 0x05, 0x00])),
        Err(DecodeError::Structure(_))
    ));
    let too_many = Rpc {
        ihave: vec![IHave::default(); MAX_IHAVE_PER_FRAME + 1],
        ..Rpc::default()
    };
    assert!(matches!(
        decode_frame(encode_frame(too_many)),
        Err(DecodeError::TooMany { .. })
    ));
    let bad_topic = Rpc {
        graft: vec![Graft {
            topic: "x".repeat(257),
        }],
        ..Rpc::default()
    };
    assert_eq!(
        decode_frame(encode_frame(bad_topic)),
        Err(DecodeError::BadTopic(257))
    );
    let bad_id = Rpc {
        iwant: vec![IWant {
            ids: vec![Bytes::from_static(b"short")],
        }],
        ..Rpc::default()
    };
    assert_eq!(
        decode_frame(encode_frame(bad_id)),
        Err(DecodeError::BadId(5))
    );
}
