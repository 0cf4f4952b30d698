//! Unit tests of `protocol.rs`.

use shoal_identity::Keypair;

use super::*;
use crate::record::Record;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn msg(request_id: u64, body: Body) -> Message {
    Message { request_id, body }
}

fn record() -> SignedRecord {
    let keypair = Keypair::from_secret_bytes(&[1u8; 32]);
    let record = Record {
        key: Key::from_bytes([0xab; 32]),
        kind: "test".into(),
        value: Bytes::from_static(b"hello"),
        publisher: keypair.peer_id(),
        seq: 7,
        expires: 1_700_003_600,
    };
    SignedRecord::sign(&keypair, record).unwrap()
}

/// The vectors printed in docs/PROTOCOL.md, section 8.
#[test]
fn documented_vectors() {
    let key = Key::from_bytes([0xab; 32]);
    let contact = Contact::new(
        PeerId::from_bytes([0x01; 32]),
        vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
    );
    let rid = 0x0102_0304_0506_0708;
    let ab = "ab".repeat(32);
    let peer = format!(
        "0a3b0a20{}12172f6970342f3132372e302e302e312f7463702f34303031",
        "01".repeat(32)
    );
    let cases = [
        (msg(rid, Body::Ping), "0908070605040302011200".to_string()),
        (msg(rid, Body::Pong), "0908070605040302011a00".to_string()),
        (
            msg(rid, Body::FindNode(key)),
            format!("0908070605040302012222 0a20{ab}").replace(' ', ""),
        ),
        (
            msg(rid, Body::Nodes(vec![contact.clone()])),
            format!("0908070605040302012a3d{peer}"),
        ),
        (
            msg(rid, Body::FindValue(key)),
            format!("0908070605040302013222 0a20{ab}").replace(' ', ""),
        ),
        (
            msg(
                rid,
                Body::Value {
                    record: None,
                    closer: vec![contact],
                },
            ),
            format!("0908070605040302013a3d123b{}", &peer[4..]),
        ),
        (
            msg(rid, Body::StoreAck(StoreStatus::Unchanged)),
            "0908070605040302014a020801".to_string(),
        ),
    ];
    for (m, expected) in cases {
        assert_eq!(hex(&m.encode()), expected, "{m:?}");
        assert_eq!(Message::decode(&m.encode()), Ok(m));
    }
    let store = msg(rid, Body::Store(record()));
    assert_eq!(
        hex(&store.encode()),
        format!(
            "09080706050403020142a2010a9f01{}",
            hex(&record().to_bytes())
        )
    );
    assert_eq!(Message::decode(&store.encode()), Ok(store));
    assert_eq!(MAX_MESSAGE_SIZE, 84_004);
    // The borrowed encoders give the same bytes.
    let c = Contact::new(PeerId::from_bytes([1; 32]), vec![]);
    assert_eq!(
        Message::encode_nodes(rid, &[&c]),
        msg(rid, Body::Nodes(vec![c.clone()])).encode()
    );
    let body = Body::Value {
        record: Some(record()),
        closer: vec![c.clone()],
    };
    assert_eq!(
        Message::encode_value(rid, Some(&record()), &[&c]),
        msg(rid, body).encode()
    );
}

#[test]
fn unchecked_encoders_write_the_real_layout() {
    let c = Contact::new(PeerId::from_bytes([1; 32]), vec![]);
    let good = record().to_bytes();
    let body = Body::Value {
        record: Some(record()),
        closer: vec![c.clone()],
    };
    assert_eq!(
        Message::encode_value_bytes(9, good.clone(), &[&c]),
        msg(9, body).encode()
    );
    assert_eq!(
        Message::encode_store_bytes(9, good),
        msg(9, Body::Store(record())).encode()
    );
    // Bytes that are no record travel, and the receiver's decoder
    // refuses them.
    let junk = Bytes::from_static(b"not a record");
    assert!(matches!(
        Message::decode(&Message::encode_value_bytes(1, junk.clone(), &[])),
        Err(DecodeError::Record(RecordError::Malformed(_)))
    ));
    assert!(matches!(
        Message::decode(&Message::encode_store_bytes(1, junk)),
        Err(DecodeError::Record(RecordError::Malformed(_)))
    ));
}

#[test]
fn address_text_matches_display() {
    for text in [
        "/ip4/0.0.0.0/tcp/0",
        "/ip4/255.255.255.255/tcp/65535",
        "/ip4/10.20.3.4/tcp/4001",
        "/memory/18446744073709551615",
        "/memory/0",
        "/ip6/::1/tcp/5",
        "/dns4/example.org/tcp/443",
    ] {
        let a: Multiaddr = text.parse().unwrap();
        assert_eq!(addr_text(&a), text);
        let with_id = a.with_peer_id(PeerId::from_bytes([1; 32]));
        assert_eq!(addr_text(&with_id), text);
    }
}

#[test]
fn rejects_malformed_input() {
    assert_eq!(Message::decode(&[]), Err(DecodeError::UnknownType));
    assert!(matches!(
        Message::decode(&[0xff; 5]),
        Err(DecodeError::Malformed(_))
    ));
    assert_eq!(
        Message::decode(&vec![0; MAX_MESSAGE_SIZE + 1]),
        Err(DecodeError::TooLarge(MAX_MESSAGE_SIZE + 1))
    );
    let short_key = wire::KadMessage {
        request_id: 1,
        client: false,
        body: Some(wire::Body::FindNode(wire::KeyMsg { key: vec![1; 31] })),
    };
    assert_eq!(
        Message::decode(&short_key.encode_to_vec()),
        Err(DecodeError::KeyLength(31))
    );
    let peer = wire::Peer {
        id: vec![1; 32],
        addrs: vec![],
    };
    let many = wire::KadMessage {
        request_id: 1,
        client: false,
        body: Some(wire::Body::Nodes(wire::Nodes {
            closer: vec![peer.clone(); MAX_PEERS_PER_MESSAGE + 1],
        })),
    };
    assert_eq!(
        Message::decode(&many.encode_to_vec()),
        Err(DecodeError::TooManyPeers(MAX_PEERS_PER_MESSAGE + 1))
    );
    let bad_id = wire::KadMessage {
        request_id: 1,
        client: false,
        body: Some(wire::Body::Nodes(wire::Nodes {
            closer: vec![wire::Peer {
                id: vec![1; 3],
                addrs: vec![],
            }],
        })),
    };
    assert_eq!(
        Message::decode(&bad_id.encode_to_vec()),
        Err(DecodeError::PeerIdLength(3))
    );
    let long_addr = wire::KadMessage {
        request_id: 1,
        client: false,
        body: Some(wire::Body::Nodes(wire::Nodes {
            closer: vec![wire::Peer {
                id: vec![1; 32],
                addrs: vec!["/".repeat(MAX_ADDR_LEN + 1)],
            }],
        })),
    };
    assert_eq!(
        Message::decode(&long_addr.encode_to_vec()),
        Err(DecodeError::Addrs)
    );
    // Unparseable addresses are skipped; unknown fields ignored.
    let odd = wire::KadMessage {
        request_id: 1,
        client: false,
        body: Some(wire::Body::Nodes(wire::Nodes {
            closer: vec![wire::Peer {
                id: vec![1; 32],
                addrs: vec!["/quic/1".into(), "/memory/3".into()],
            }],
        })),
    };
    let Ok(Message {
        body: Body::Nodes(c),
        ..
    }) = Message::decode(&odd.encode_to_vec())
    else {
        panic!("expected nodes");
    };
    assert_eq!(c[0].addrs, vec!["/memory/3".parse().unwrap()]);
    let empty_store = wire::KadMessage {
        request_id: 1,
        client: false,
        body: Some(wire::Body::Store(wire::Store {
            record: Bytes::new(),
        })),
    };
    assert_eq!(
        Message::decode(&empty_store.encode_to_vec()),
        Err(DecodeError::MissingRecord)
    );
    // A tampered record inside a Value is an error.
    let mut env = record().to_bytes().to_vec();
    let last = env.len() - 1;
    env[last] ^= 1;
    let bad = wire::KadMessage {
        request_id: 1,
        client: false,
        body: Some(wire::Body::Value(wire::Value {
            record: Bytes::from(env),
            closer: vec![],
        })),
    };
    assert_eq!(
        Message::decode(&bad.encode_to_vec()),
        Err(DecodeError::Record(RecordError::BadSignature))
    );
    assert_eq!(
        Message::decode(&[0x4a, 0x02, 0x08, 0x09]),
        Ok(msg(0, Body::StoreAck(StoreStatus::Unknown(9))))
    );
}
