//! Presence records and user id text forms, including the test vectors
//! printed in docs/PROTOCOL.md, section 11.
#![allow(clippy::unwrap_used)]

use shoal_identity::Keypair;
use shoal_im::account::DEVICE_CERT_LEN;
use shoal_im::contact::{USER_ID_PREFIX, USER_ID_TEXT_LEN};
use shoal_im::presence::{
    MAX_PRESENCE_ADDRESS_LEN, MAX_PRESENCE_ADDRESSES, MAX_PRESENCE_LEN, MIN_PRESENCE_LEN,
    PREKEY_KEY_PURPOSE, PRESENCE_CLOCK_SKEW, PRESENCE_KEY_PURPOSE, PRESENCE_PURPOSE,
    PresenceRecord,
};
use shoal_im::{Device, Error, UserId, UserIdError};

const CREATED: u64 = 1_700_000_000;
const EXPIRES: u64 = 1_700_086_400;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn user(seed: u8) -> Keypair {
    Keypair::from_secret_bytes(&[seed; 32])
}

/// The device of the documented vector: user `31`, device `32`, identity `33`.
fn device() -> Device {
    Device::new(&user(0x31), user(0x32), [0x33; 32], CREATED)
}

fn sample() -> Vec<u8> {
    PresenceRecord::sign(
        &device(),
        &["/ip4/198.51.100.7/tcp/4001", "/memory/7"],
        5,
        EXPIRES,
    )
    .unwrap()
}

/// Signs `body` as `device` would: for hand-made records that must fail on
/// something other than the signature.
fn signed(device: &Device, body: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    out.extend_from_slice(&device.signing_key().sign(PRESENCE_PURPOSE, body));
    out
}

/// version, certificate, seq, expires: the part before `count`.
fn header(device: &Device) -> Vec<u8> {
    let mut out = vec![1];
    out.extend_from_slice(&device.certificate().encode());
    out.extend_from_slice(&5u64.to_be_bytes());
    out.extend_from_slice(&EXPIRES.to_be_bytes());
    out
}

fn malformed(result: Result<PresenceRecord, Error>) -> bool {
    matches!(result, Err(Error::Malformed { .. }))
}

/// The DHT key of `name` under `purpose`: BLAKE2b-256 over the
/// purpose-prefixed name (shoal-kad's `Key::for_name`).
fn dht_key(purpose: shoal_identity::Purpose, name: &[u8]) -> String {
    use blake2::{Blake2b, Digest, digest::consts::U32};
    hex(&Blake2b::<U32>::digest(shoal_identity::signed_input(
        purpose, name,
    )))
}

/// The vectors printed in docs/PROTOCOL.md, section 11.
#[test]
fn documented_vectors() {
    let device = device();
    let user_id = UserId::new(user(0x31).public());
    assert_eq!(
        hex(&user_id.to_bytes()),
        "48075a597e721a156e2e0799de5cc0c5324dc6e7eaf1cdd46250868ec53215dd"
    );
    assert_eq!(
        user_id.to_string(),
        "SHOAL-JADVUWL6OINBK3ROA6M54XGAYUZE3RXH5LY43VDCKCDI5RJSCXOXXWB6"
    );
    assert_eq!(
        dht_key(PRESENCE_KEY_PURPOSE, &user_id.to_bytes()),
        "a79f0f3d1720ea94b985a7318bb78ff52f6768d2237dc338ed0a094223dccc22"
    );
    assert_eq!(
        dht_key(PREKEY_KEY_PURPOSE, &user_id.to_bytes()),
        "477e7f3b45a636edeab51ae051737d4f35d5f98856f188d4e17f217a23855693"
    );

    let bytes = sample();
    assert_eq!(bytes.len(), 290);
    assert_eq!(
        hex(&bytes),
        [
            "01",
            // device certificate (section 10.2)
            "0248075a597e721a156e2e0799de5cc0c5324dc6e7eaf1cdd46250868ec53215",
            "dd5e212c0980e4b39fc09721134aa02109374edfd260c0d3d03cb501c8d65457",
            "a97b0d47d93427f8311160781c7c733fd89f88970aef490d8aa0ee19a4cb8a1b",
            "140000000065ca9800b75faa0bd2c6efaa4b4b162d2c38744f2906f506699d08",
            "984f22c9bd98b4953d927c692ad0d585a4f1c58b302efec66dd2ce8506f72178",
            "2004d85ae80f29830f",
            // seq, expires, count
            "0000000000000005",
            "0000000065554280",
            "02",
            // addresses
            "001a2f6970342f3139382e35312e3130302e372f7463702f34303031",
            "00092f6d656d6f72792f37",
            // signature
            "f6558bc46e7e7e9b6fa2e9e8214eef469df67c39d4f4dff2715d2209b24118c2",
            "acf39157821b03b333d4f99d8566506ab7640e1fc7a74a638f36f1b6bca37108",
        ]
        .concat()
    );
    assert_eq!(
        hex(&shoal_identity::signed_input(PRESENCE_PURPOSE, b"")),
        "1373686f616c2f696d2f70726573656e63652f31"
    );
    let record = PresenceRecord::decode(&bytes).unwrap();
    assert_eq!(record.certificate(), device.certificate());
}

#[test]
fn round_trip() {
    let device = device();
    let bytes = sample();
    let record = PresenceRecord::decode(&bytes).unwrap();
    assert_eq!(record.certificate(), device.certificate());
    assert_eq!(record.user(), UserId::new(user(0x31).public()));
    assert_eq!(
        record.addresses(),
        ["/ip4/198.51.100.7/tcp/4001", "/memory/7"]
    );
    assert_eq!(record.seq(), 5);
    assert_eq!(record.expires(), EXPIRES);
    // Deterministic: the same inputs give the same bytes.
    assert_eq!(sample(), bytes);
    // No addresses at all, and the largest record.
    let empty = PresenceRecord::sign::<&str>(&device, &[], 1, EXPIRES).unwrap();
    assert_eq!(empty.len(), MIN_PRESENCE_LEN);
    assert!(
        PresenceRecord::decode(&empty)
            .unwrap()
            .addresses()
            .is_empty()
    );
    let long = "a".repeat(MAX_PRESENCE_ADDRESS_LEN);
    let full = vec![long.as_str(); MAX_PRESENCE_ADDRESSES];
    let full = PresenceRecord::sign(&device, &full, 1, EXPIRES).unwrap();
    assert_eq!(full.len(), MAX_PRESENCE_LEN);
    assert_eq!(PresenceRecord::decode(&full).unwrap().addresses().len(), 16);
}

#[test]
fn any_tampered_byte_is_refused() {
    let bytes = sample();
    for i in 0..bytes.len() {
        for flip in [0x01, 0x80] {
            let mut bad = bytes.clone();
            bad[i] ^= flip;
            assert!(
                PresenceRecord::decode(&bad).is_err(),
                "byte {i} ^ {flip:#x}"
            );
        }
    }
    // Every truncation and an extra byte.
    for len in 0..bytes.len() {
        assert!(
            PresenceRecord::decode(&bytes[..len]).is_err(),
            "length {len}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(PresenceRecord::decode(&longer).is_err());
}

#[test]
fn wrong_signer_or_purpose_is_refused() {
    let device = device();
    let bytes = sample();
    let body = &bytes[..bytes.len() - 64];
    // Signed by the user's root key instead of the device key.
    let mut by_root = body.to_vec();
    by_root.extend_from_slice(&user(0x31).sign(PRESENCE_PURPOSE, body));
    assert!(matches!(
        PresenceRecord::decode(&by_root),
        Err(Error::Identity(_))
    ));
    // Signed by another device of another user.
    let other = Device::new(&user(0x41), user(0x42), [0x43; 32], CREATED);
    let mut by_other = body.to_vec();
    by_other.extend_from_slice(&other.signing_key().sign(PRESENCE_PURPOSE, body));
    assert!(matches!(
        PresenceRecord::decode(&by_other),
        Err(Error::Identity(_))
    ));
    // The right key for another purpose.
    let mut wrong_purpose = body.to_vec();
    wrong_purpose.extend_from_slice(
        &device
            .signing_key()
            .sign(shoal_im::x3dh::SIGNED_PREKEY_PURPOSE, body),
    );
    assert!(matches!(
        PresenceRecord::decode(&wrong_purpose),
        Err(Error::Identity(_))
    ));
    // Another device's certificate spliced in, signed by the original device.
    let mut spliced = header(&device);
    spliced[1..1 + DEVICE_CERT_LEN].copy_from_slice(&other.certificate().encode());
    spliced.push(0);
    assert!(matches!(
        PresenceRecord::decode(&signed(&device, &spliced)),
        Err(Error::Identity(_))
    ));
}

#[test]
fn user_and_expiry() {
    let record = PresenceRecord::decode(&sample()).unwrap();
    let alice = UserId::new(user(0x31).public());
    let mallory = UserId::new(user(0x41).public());
    assert_eq!(record.verify_for(&alice, CREATED), Ok(()));
    assert_eq!(record.verify_for(&mallory, CREATED), Err(Error::WrongUser));
    // Live until the skew tolerance has passed too.
    assert_eq!(record.verify_for(&alice, EXPIRES), Ok(()));
    assert_eq!(
        record.verify_for(&alice, EXPIRES + PRESENCE_CLOCK_SKEW - 1),
        Ok(())
    );
    assert_eq!(
        record.verify_for(&alice, EXPIRES + PRESENCE_CLOCK_SKEW),
        Err(Error::Expired {
            expires: EXPIRES,
            now: EXPIRES + PRESENCE_CLOCK_SKEW
        })
    );
    // An expiry near the end of time does not overflow.
    let forever = PresenceRecord::sign::<&str>(&device(), &[], 1, u64::MAX).unwrap();
    let forever = PresenceRecord::decode(&forever).unwrap();
    assert_eq!(forever.verify_for(&alice, CREATED), Ok(()));
    // The device certificate's expiry bounds it all the same.
    let cert_expires = forever.certificate().expires();
    assert!(cert_expires < u64::MAX / 2);
    assert_eq!(
        forever.verify_for(&alice, u64::MAX - 1),
        Err(Error::Expired {
            expires: cert_expires,
            now: u64::MAX - 1
        })
    );
}

#[test]
fn bounds_are_enforced_without_panics() {
    let device = device();
    // The signer refuses what readers would refuse.
    let too_many = vec!["/memory/1"; MAX_PRESENCE_ADDRESSES + 1];
    assert!(matches!(
        PresenceRecord::sign(&device, &too_many, 1, EXPIRES),
        Err(Error::Malformed { .. })
    ));
    let too_long = "a".repeat(MAX_PRESENCE_ADDRESS_LEN + 1);
    assert!(matches!(
        PresenceRecord::sign(&device, &[too_long.as_str()], 1, EXPIRES),
        Err(Error::Malformed { .. })
    ));

    // Validly signed records that break a bound.
    let mut count = header(&device);
    count.push(MAX_PRESENCE_ADDRESSES as u8 + 1);
    for _ in 0..=MAX_PRESENCE_ADDRESSES {
        count.extend_from_slice(&[0, 1, b'a']);
    }
    assert!(malformed(PresenceRecord::decode(&signed(&device, &count))));

    let mut count_255 = header(&device);
    count_255.push(255);
    assert!(malformed(PresenceRecord::decode(&signed(
        &device, &count_255
    ))));

    let mut len = header(&device);
    len.push(1);
    len.extend_from_slice(&(MAX_PRESENCE_ADDRESS_LEN as u16 + 1).to_be_bytes());
    len.extend_from_slice(&vec![b'a'; MAX_PRESENCE_ADDRESS_LEN + 1]);
    assert!(malformed(PresenceRecord::decode(&signed(&device, &len))));

    // A length running past the end, and one of 65535.
    for claimed in [10u16, u16::MAX] {
        let mut past = header(&device);
        past.push(1);
        past.extend_from_slice(&claimed.to_be_bytes());
        past.extend_from_slice(b"abc");
        assert!(malformed(PresenceRecord::decode(&signed(&device, &past))));
    }

    // Fewer addresses than the count says, and bytes after the last one.
    let mut short = header(&device);
    short.push(2);
    short.extend_from_slice(&[0, 1, b'a']);
    assert!(malformed(PresenceRecord::decode(&signed(&device, &short))));
    let mut trailing = header(&device);
    trailing.push(1);
    trailing.extend_from_slice(&[0, 1, b'a', 0]);
    assert!(malformed(PresenceRecord::decode(&signed(
        &device, &trailing
    ))));

    // Not UTF-8.
    let mut utf8 = header(&device);
    utf8.push(1);
    utf8.extend_from_slice(&[0, 2, 0xc3, 0x28]);
    assert!(malformed(PresenceRecord::decode(&signed(&device, &utf8))));

    // Over the total limit, and empty.
    let mut huge = vec![1u8; MAX_PRESENCE_LEN + 1];
    huge[0] = 1;
    assert!(malformed(PresenceRecord::decode(&huge)));
    assert!(malformed(PresenceRecord::decode(&[])));

    // Garbage of every length up to the limit never panics.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for len in (0..MAX_PRESENCE_LEN + 2).step_by(7) {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let mut versioned = bytes.clone();
        if let Some(first) = versioned.first_mut() {
            *first = 1;
        }
        assert!(PresenceRecord::decode(&bytes).is_err());
        assert!(PresenceRecord::decode(&versioned).is_err());
    }
}

#[test]
fn unknown_version_is_named() {
    let mut bytes = sample();
    bytes[0] = 2;
    assert_eq!(
        PresenceRecord::decode(&bytes),
        Err(Error::UnsupportedVersion {
            what: "presence record",
            found: 2
        })
    );
    // Even if the rest has another layout.
    assert!(matches!(
        PresenceRecord::decode(&[0, 1, 2]),
        Err(Error::UnsupportedVersion { found: 0, .. })
    ));
}

// --- user id text form ---

fn is_qr_alphanumeric(c: char) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-'
}

#[test]
fn user_id_round_trip_and_shape() {
    for seed in [0x00, 0x31, 0x7f, 0xff] {
        let id = UserId::new(user(seed).public());
        let text = id.to_string();
        assert_eq!(text.len(), 62);
        assert_eq!(USER_ID_TEXT_LEN, 62);
        assert!(text.starts_with(USER_ID_PREFIX));
        assert!(text.chars().all(is_qr_alphanumeric), "{text}");
        // Base32 digits are 2-7 only.
        assert!(!text[USER_ID_PREFIX.len()..].contains(['0', '1', '8', '9']));
        assert_eq!(text.parse::<UserId>(), Ok(id));
        assert_eq!(UserId::from_bytes(&id.to_bytes()), Ok(id));
    }
}

#[test]
fn user_id_lowercase_and_whitespace_accepted() {
    let id = UserId::new(user(0x31).public());
    let text = id.to_string();
    assert_eq!(text.to_lowercase().parse::<UserId>(), Ok(id));
    assert_eq!(
        format!("  {}\n", text.to_lowercase()).parse::<UserId>(),
        Ok(id)
    );
    let mixed: String = text
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_lowercase()
            } else {
                c
            }
        })
        .collect();
    assert_eq!(mixed.parse::<UserId>(), Ok(id));
}

#[test]
fn user_id_typos_are_detected() {
    let text = UserId::new(user(0x31).public()).to_string();
    let prefix = USER_ID_PREFIX.len();
    for i in prefix..text.len() {
        let mut chars: Vec<char> = text.chars().collect();
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let typo: String = chars.iter().collect();
        assert_eq!(
            typo.parse::<UserId>(),
            Err(UserIdError::Checksum),
            "position {i}"
        );
    }
    // Two neighbouring characters swapped.
    let mut chars: Vec<char> = text.chars().collect();
    let i = (prefix..text.len() - 1)
        .find(|&i| chars[i] != chars[i + 1])
        .unwrap();
    chars.swap(i, i + 1);
    let swapped: String = chars.iter().collect();
    assert_eq!(swapped.parse::<UserId>(), Err(UserIdError::Checksum));
}

#[test]
fn user_id_format_errors() {
    let text = UserId::new(user(0x31).public()).to_string();
    let body = &text[USER_ID_PREFIX.len()..];
    for bad in [
        String::new(),
        body.to_string(),
        format!("SHOAL{body}"),
        format!("XHOAL-{body}"),
        text[..61].to_string(),
        format!("{text}A"),
        format!("SHOAL-0{}", &body[1..]),
        format!("SHOAL-1{}", &body[1..]),
        format!("SHOAL-8{}", &body[1..]),
        format!("SHOAL-={}", &body[1..]),
        format!("SHOAL-é{}", &body[2..]),
        format!("SHOAL- {}", &body[1..]),
    ] {
        assert_eq!(bad.parse::<UserId>(), Err(UserIdError::Format), "{bad:?}");
    }
}
