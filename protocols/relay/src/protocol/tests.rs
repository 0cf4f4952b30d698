//! Round trips, bounds and the vectors of `docs/PROTOCOL.md` section 13.

use super::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn vectors() {
    let peer = PeerId::from_bytes([0x11; 32]);
    let limit = Limit {
        bytes: 4 << 20,
        secs: 1800,
    };
    let cases: [(Bytes, &str); 5] = [
        (HopMessage::Reserve.encode(), "000000020a00"),
        (
            HopMessage::Connect(peer).encode(),
            "0000002412220a20\
             1111111111111111111111111111111111111111111111111111111111111111",
        ),
        (
            HopMessage::Status(Status {
                code: StatusCode::Ok,
                ttl_secs: 3600,
                limit: Some(limit),
            })
            .encode(),
            "0000000f1a0d10901c1a08088080800210880e",
        ),
        (
            StopMessage::Incoming {
                peer,
                limit: Some(limit),
            }
            .encode(),
            "0000002e0a2c0a20\
             1111111111111111111111111111111111111111111111111111111111111111\
             1208088080800210880e",
        ),
        (
            StopMessage::Status(Status::new(StatusCode::NoReservation)).encode(),
            "0000000412020801",
        ),
    ];
    for (encoded, expected) in cases {
        assert_eq!(hex(&encoded), expected);
    }
}

#[test]
fn round_trips() {
    let peer = PeerId::from_bytes([0x42; 32]);
    let limit = Some(Limit { bytes: 7, secs: 9 });
    for m in [
        HopMessage::Reserve,
        HopMessage::Connect(peer),
        HopMessage::Status(Status {
            code: StatusCode::Other(77),
            ttl_secs: 5,
            limit,
        }),
    ] {
        assert_eq!(HopMessage::decode(&m.encode()[4..]).unwrap(), m);
    }
    for m in [
        StopMessage::Incoming { peer, limit },
        StopMessage::Status(Status::new(StatusCode::PermissionDenied)),
    ] {
        assert_eq!(StopMessage::decode(&m.encode()[4..]).unwrap(), m);
    }
}

#[test]
fn hostile_input_gets_a_clear_error() {
    // No body; a peer id of the wrong length; garbage.
    assert!(matches!(
        HopMessage::decode(&[]),
        Err(DecodeError::UnknownType)
    ));
    assert!(matches!(
        HopMessage::decode(&[0x12, 0x03, 0x0a, 0x01, 0x00]),
        Err(DecodeError::PeerIdLength(1))
    ));
    assert!(matches!(
        StopMessage::decode(&[0xff, 0xff]),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        HopMessage::decode(&[0; MAX_MESSAGE_SIZE + 1]),
        Err(DecodeError::TooLarge(_))
    ));
}

#[tokio::test]
async fn reads_are_exact_and_bounded() {
    // A message followed by relayed bytes: the read takes the message only.
    let mut input = HopMessage::Reserve.encode().to_vec();
    input.extend_from_slice(b"after");
    let mut reader = &input[..];
    assert_eq!(
        HopMessage::read(&mut reader).await.unwrap(),
        HopMessage::Reserve
    );
    assert_eq!(reader, b"after");
    // A declared length over the bound is refused before reading on.
    let huge = [0xff, 0xff, 0xff, 0xff, 0, 0];
    let mut reader = &huge[..];
    assert!(matches!(
        HopMessage::read(&mut reader).await,
        Err(DecodeError::TooLarge(_))
    ));
    assert_eq!(reader.len(), 2);
    // End of stream inside a message.
    let mut reader = &[0, 0, 0, 9, 1][..];
    assert!(matches!(
        StopMessage::read(&mut reader).await,
        Err(DecodeError::Io(_))
    ));
}
