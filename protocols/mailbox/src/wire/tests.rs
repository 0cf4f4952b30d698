//! Round trips, bounds and the test vectors of docs/PROTOCOL.md 12.

use shoal_identity::Keypair;

use super::*;
use crate::id::{Retention, WritePolicy};

fn descriptor() -> Descriptor {
    Descriptor {
        key: Keypair::from_secret_bytes(&[1; 32]).public(),
        write: WritePolicy::Owner,
        retention: Retention::UntilAck,
    }
}

fn body(op: Op) -> RequestBody {
    RequestBody {
        descriptor: descriptor(),
        unix_ms: 1_700_000_000_000,
        nonce: [2; NONCE_LEN],
        op,
        replica: Keypair::from_secret_bytes(&[3; 32]).peer_id(),
    }
}

#[test]
fn frames_round_trip() {
    let key = Keypair::from_secret_bytes(&[1; 32]);
    let ops = [
        Op::Store {
            envelope: Bytes::from_static(b"sealed"),
            expiry: 1_700_086_400,
            class: Class::Control,
        },
        Op::Fetch {
            after: 7,
            limit: 10,
            subscribe: true,
        },
        Op::Ack {
            hashes: vec![EnvelopeHash::of(b"a"), EnvelopeHash::of(b"b")],
        },
    ];
    for op in ops {
        let request = Request::signed(body(op), &key);
        assert!(request.verify());
        let frame = Frame::Request { id: 9, request };
        assert_eq!(Frame::decode(&frame.encode()).unwrap(), frame);
    }
    let answers = [
        Answer::Stored {
            signature: [3; 64],
            expiry: 5,
            proof: Proof {
                siblings: vec![[4; 32], [5; 32]],
                sides: 2,
            },
        },
        Answer::Quota { retry_after_ms: 60 },
        Answer::Busy { retry_after_ms: 1 },
        Answer::Refused {
            reason: Refusal::ClockSkew,
            replica_unix_ms: 77,
        },
        Answer::Items {
            items: vec![Item {
                seq: 4,
                envelope: Bytes::from_static(b"x"),
                expiry: 9,
            }],
            more: true,
        },
        Answer::Acked { removed: 2 },
    ];
    for answer in answers {
        let frame = Frame::Answer { id: 1, answer };
        assert_eq!(Frame::decode(&frame.encode()).unwrap(), frame);
    }
}

#[test]
fn a_signature_covers_the_exact_body() {
    let key = Keypair::from_secret_bytes(&[1; 32]);
    let mut request = Request::signed(
        body(Op::Fetch {
            after: 0,
            limit: 1,
            subscribe: false,
        }),
        &key,
    );
    let mut tampered = request.body_bytes.to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    request.body_bytes = Bytes::from(tampered);
    assert!(!request.verify());
    let stranger = Keypair::from_secret_bytes(&[5; 32]);
    let forged = Request::signed(
        body(Op::Ack {
            hashes: vec![EnvelopeHash::of(b"a")],
        }),
        &stranger,
    );
    assert!(
        !forged.verify(),
        "signed by a key other than the descriptor's"
    );
}

#[test]
fn bounds_are_checked() {
    let big = Request::unsigned(body(Op::Store {
        envelope: Bytes::from(vec![0; MAX_ENVELOPE_LEN + 1]),
        expiry: 1,
        class: Class::Normal,
    }));
    let frame = Frame::Request {
        id: 1,
        request: big,
    };
    assert_eq!(
        Frame::decode(&frame.encode()),
        Err(DecodeError::Invalid("envelope length"))
    );
    let many = Request::unsigned(body(Op::Ack {
        hashes: vec![EnvelopeHash::of(b"a"); MAX_ACK_HASHES + 1],
    }));
    assert!(
        Frame::decode(
            &Frame::Request {
                id: 1,
                request: many
            }
            .encode()
        )
        .is_err()
    );
    assert!(Frame::decode(&[0xff; 8]).is_err());
    assert!(matches!(
        Frame::decode(&vec![0; MAX_MESSAGE_SIZE + 1]),
        Err(DecodeError::TooLarge(_))
    ));
    // A frame without a body, and a request without an op.
    assert!(Frame::decode(&[0x09, 1, 0, 0, 0, 0, 0, 0, 0]).is_err());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The vectors printed in docs/PROTOCOL.md, section 12.
#[test]
fn documented_vectors() {
    let owner = Keypair::from_secret_bytes(&[0x11; 32]);
    let d = Descriptor {
        key: owner.public(),
        write: WritePolicy::Owner,
        retention: Retention::UntilAck,
    };
    let body = RequestBody {
        descriptor: d,
        unix_ms: 1_800_000_000_000,
        nonce: [0x22; NONCE_LEN],
        op: Op::Store {
            envelope: Bytes::from_static(b"sealed"),
            expiry: 1_800_086_400,
            class: Class::Normal,
        },
        replica: Keypair::from_secret_bytes(&[0x33; 32]).peer_id(),
    };
    let frame = Frame::Request {
        id: 0x0102030405060708,
        request: Request::signed(body, &owner),
    };
    let replica = Keypair::from_secret_bytes(&[0x33; 32]);
    let receipt = crate::Receipt::sign(
        &replica,
        d.id(),
        crate::EnvelopeHash::of(b"sealed"),
        1_800_086_400,
    );
    assert_eq!(
        hex(&d.encode()),
        "01d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c97787370101"
    );
    assert_eq!(
        hex(d.id().as_bytes()),
        "401f6638328ed8b588ac2ec06a64c32eb241ace0ff1905f7fc86623dd66c258a"
    );
    assert_eq!(
        hex(crate::EnvelopeHash::of(b"sealed").as_bytes()),
        "aa3e3407552b44a7a9d0c2cfa2a14efe235f3aee7dc9ae1f7e8f1c3e59fc0807"
    );
    assert_eq!(
        hex(&frame.encode()),
        concat!(
            "090807060504030201",
            "12b901",
            "0a75",
            "0a23",
            "01d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c97787370101",
            "1100505c18a3010000",
            "1a1022222222222222222222222222222222",
            "2211",
            "0a067365616c6564",
            "1180234b6b00000000",
            "3a20",
            "17cb79fb2b4120f2b1ec65e4198d6e08b28e813feb01e4a400839b85e18080ce",
            "1240",
            "1aab5242fd4cb6e48f274c90470a8dc186ee06d5d94ed78b77480adc74e06c67",
            "7ea96a0e1df072226b59b6b7a61be31513705d782e0930769688bf630a10e601",
        )
    );
    let hash = crate::EnvelopeHash::of(b"sealed");
    let leaf = crate::receipt::leaf(&d.id(), &hash, 1_800_086_400);
    let second = crate::receipt::leaf(&d.id(), &crate::EnvelopeHash::of(b"other"), 1_800_086_400);
    let (root, proofs) = crate::receipt::tree(&[leaf, second]);
    let pair = crate::Receipt::sign_batch(
        &replica,
        &[
            (d.id(), hash, 1_800_086_400),
            (d.id(), crate::EnvelopeHash::of(b"other"), 1_800_086_400),
        ],
    );
    assert_eq!(
        hex(&leaf),
        "b24ed09db05119e0940ed9ad6b8fb6f04648a52a003e53c41eaca97952ca99e7"
    );
    assert_eq!(
        hex(&receipt.signature),
        concat!(
            "203bc8e669b986cc8b920298039c43e46a7f938dbed422b2bcf94b2f717d27ef",
            "90ae1122bbbba14ebe81fbcb1ffb3f98db9b145ca1afa0745187459bfa180a0e",
        )
    );
    assert_eq!(
        hex(&second),
        "15726a2c5a392b3ff18a66d75ff29fd020e2497eb29b2121f332f2a3287f6f58"
    );
    assert_eq!(
        hex(&root),
        "8ed559098b067887340692e4e12e7ffdb96187fc47757865e976d42c32b85833"
    );
    assert_eq!(proofs[0].siblings, vec![second]);
    assert_eq!((proofs[0].sides, proofs[1].sides), (0, 1));
    assert_eq!(
        hex(&pair[0].signature),
        concat!(
            "d1686afc11a2530d543dd676a045173a35e2dcb317cf6c0fd6170c3df8631827",
            "e6e8e4fbc097bf98792f1a51336bf85ac8f7defd089948e69e594e6b12eeee0c",
        )
    );
}

#[test]
fn wake_vectors() {
    // PROTOCOL.md 12.11.
    let wake = Frame::Wake {
        token: WakeToken([0x5a; 16]),
    }
    .encode();
    assert_eq!(wake.len(), crate::wake::WAKE_FRAME_LEN);
    assert_eq!(
        hex(&wake),
        format!("3212 0a10{}", "5a".repeat(16)).replace(' ', "")
    );
    let registered = Frame::Answer {
        id: 1,
        answer: Answer::Registered {
            until: 1_700_003_600,
        },
    }
    .encode();
    assert_eq!(
        hex(&registered),
        "0901000000000000001a0b3a090910ff536500000000"
    );
    assert_eq!(
        Frame::decode(&registered).unwrap(),
        Frame::Answer {
            id: 1,
            answer: Answer::Registered {
                until: 1_700_003_600
            }
        }
    );
}

#[test]
fn registrations_round_trip_and_bounds_hold() {
    let endpoint = WakeEndpoint {
        peer: Keypair::from_secret_bytes(&[9; 32]).peer_id(),
        addrs: vec!["/ip4/10.1.2.3/tcp/4001".parse().unwrap()],
        token: WakeToken([3; 16]),
    };
    let owner = Keypair::from_secret_bytes(&[2; 32]);
    let mut b = body(Op::Register {
        endpoint: endpoint.clone(),
        until: 1_700_003_600,
    });
    b.descriptor.key = owner.public();
    let frame = Frame::Request {
        id: 7,
        request: Request::signed(b, &owner),
    };
    assert_eq!(Frame::decode(&frame.encode()).unwrap(), frame);
    // A token of another length is refused.
    let bad = Frame::Wake {
        token: WakeToken([1; 16]),
    }
    .encode();
    let mut long = bad.to_vec();
    long[1] += 1;
    long[3] += 1;
    long.push(0);
    assert!(Frame::decode(&long).is_err());
}
