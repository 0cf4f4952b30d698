//! The test vectors printed in docs/PROTOCOL.md, section 10.6.
#![allow(clippy::unwrap_used)]

use rand::{CryptoRng, RngCore};
use shoal_identity::Keypair;
use shoal_im::kdf::{chain_step, kdf, root_step};
use shoal_im::ratchet::HEADER_LEN;
use shoal_im::{Device, PrekeyBundle, x3dh};

/// An "RNG" that always yields the same byte: fixed keys for the vectors.
struct Fixed(u8);

impl RngCore for Fixed {
    fn next_u32(&mut self) -> u32 {
        u32::from_ne_bytes([self.0; 4])
    }
    fn next_u64(&mut self) -> u64 {
        u64::from_ne_bytes([self.0; 8])
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        dest.fill(self.0);
    }
}
impl CryptoRng for Fixed {}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Vectors {
    kdf: String,
    root: (String, String),
    chain: (String, String),
    alice_cert: String,
    bob_cert: String,
    bob_prekey: String,
    initial_header: String,
    shared: String,
    ad: String,
    ephemeral: String,
    header: String,
    body: String,
}

fn compute() -> Vectors {
    let kdf_out = kdf("shoal/im/x3dh/1", &[0; 32], &[b"abc"]);
    let (rk, ck) = root_step(&[1; 32], &[2; 32]);
    let (ck2, mk) = chain_step(&[3; 32]);
    let created = 1_700_000_000;
    let alice_user = Keypair::from_secret_bytes(&[0x11; 32]);
    let alice = Device::new(
        &alice_user,
        Keypair::from_secret_bytes(&[0x12; 32]),
        [0x13; 32],
        created,
    );
    let bob_user = Keypair::from_secret_bytes(&[0x21; 32]);
    let bob = Device::new(
        &bob_user,
        Keypair::from_secret_bytes(&[0x22; 32]),
        [0x23; 32],
        created,
    );
    let (prekey, secret) = x3dh::signed_prekey(&bob, 1, [0x24; 32]);
    let bundle = PrekeyBundle {
        certificate: bob.certificate().clone(),
        prekey,
    };
    let bundle = PrekeyBundle::decode(&bundle.encode()).unwrap();
    let (header, mut a) = x3dh::initiate(&alice, &bob_user.public(), &bundle, [0x14; 32]).unwrap();
    let state = a.to_bytes();
    let shared = hex(&state[1..33]);
    let ad = hex(&state[33..97]);
    let message = a.encrypt(&mut Fixed(0x15), b"hello bob").unwrap();
    let mut b = x3dh::respond(&bob, &secret, &header).unwrap();
    assert_eq!(b.to_bytes()[1..97], state[1..97]);
    assert_eq!(b.decrypt(&message).unwrap(), b"hello bob");
    Vectors {
        kdf: hex(kdf_out.as_ref()),
        root: (hex(&rk), hex(&ck)),
        chain: (hex(&ck2), hex(&mk)),
        alice_cert: hex(&alice.certificate().encode()),
        bob_cert: hex(&bob.certificate().encode()),
        bob_prekey: hex(&bundle.prekey.encode()),
        initial_header: hex(&header.encode()),
        shared,
        ad,
        ephemeral: hex(&header.ephemeral),
        header: hex(&message[..HEADER_LEN]),
        body: hex(&message[HEADER_LEN..]),
    }
}

/// Section 10 of docs/PROTOCOL.md with all whitespace removed, so hex
/// wrapped over several lines can be searched.
fn documented() -> String {
    let doc = include_str!("../../../docs/PROTOCOL.md");
    let at = doc.find("## 10. Messaging").unwrap();
    doc[at..].chars().filter(|c| !c.is_whitespace()).collect()
}

#[test]
fn documented_vectors() {
    let v = compute();
    let expected = [
        (
            &v.kdf,
            "dcf6cdedb1ed0e9a5909b645f8cfc5743cd568c63c2583a7c12a092ac8c290b9e1eaf9b4d5f16d50b4c9e8e90097a4ab5727ef0e145b399c49ada7704b21cf11",
        ),
        (
            &v.root.0,
            "17fbe707cb737800ff23db5efce2c91d41d91cf744eebe5ee06b0946cd309dff",
        ),
        (
            &v.root.1,
            "a402965c4aca7a63daac745ed7dbeecea5aa0b10d8b0da53c57ad27f6e056ba5",
        ),
        (
            &v.chain.0,
            "7e7879fe412cb3b14410523e222960495aabeacc85919f6128bf26cd45675311",
        ),
        (
            &v.chain.1,
            "eca994704684251d338d9f8566130c759de3256f19d9730c0c6d1d8b433d9260",
        ),
        (
            &v.alice_cert,
            "02d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737204040e364c10f2bec9c1fe500a1cd4c247c89d650a01ed7e82caba867877c21197fc2c567dc03ee2aadf0ed86681dac24daa76e83ca555875dd3be7376e53060000000065ca9800561568d6b41d3ec2d9e634466831cbe13c0190c9675a7079f118cfd3cf75adbe6359f63699907dec522e7e2fcd6fa1af22fdf05b576c9cec925d4d357699a00a",
        ),
        (
            &v.bob_cert,
            "02884b8857f4eaa1613c61504db34d4beaf346517a0e31de3cddd4d9b4201d9d0ba09aa5f47a6759802ff955f8dc2d2a14a5c99d23be97f864127ff9383455a4f09a4503a98ab10fe8d354c9c42cbd0c9d7944f52e7d14d8ea59775e7dc9e3bf4b0000000065ca98001512635456bca782c3294d50a5d52cf70226f5f51a9e9f1b228c5a8f91771c415e4922530fd421f49d4361c26c5d43daba7adae2d6a48faa08b1302e8a73510d",
        ),
        (
            &v.bob_prekey,
            "010000000104bcd2e0d00f2cce5fe8f1c6c2fbec5c07fa56e3aa5c88a5689975d88b3fce0564d43efe8d78508072ce77c4820851e79e554951fb0cdbd0950ed7f091d204f552c0372325ed99ff2b9026ad55d4eadbbff8d78d023ee90da347c9829b7b120b",
        ),
        (
            &v.ephemeral,
            "18a6f8c1a7fddf22bd410138f79f7298cd38d1d0a542d4266d556be8609d8862",
        ),
        (
            &v.shared,
            "577234bf75d5bf9edb4a343eb4bcdbd65369bc6945c261152b7b3b9ca3dfd60a",
        ),
        (
            &v.ad,
            "08882b74c1871b2df0a135ab713697f8e6e0fe8e679868632e2e6350bed3bdd74a62077fbe50e8774f58d730eef6da5e8859b1f76974908b22841e03b143e083",
        ),
        (
            &v.header,
            "02bce059bf5b2ab7a91f3e863acf0c84d3ebbe04ca8490094b052b5b15afab17430000000000000000151515151515151515151515",
        ),
        (
            &v.body,
            "471547548853ea1cbb4390fc088deedb4377bfc13f2d6b2feb",
        ),
    ];
    let doc = documented();
    for (computed, fixed) in expected {
        assert_eq!(computed, fixed);
        assert!(
            doc.contains(fixed),
            "docs/PROTOCOL.md section 10 lacks {fixed}"
        );
    }
    // The initial header is version | Alice's certificate | EK_a | prekey id.
    assert_eq!(
        v.initial_header,
        format!("02{}{}00000001", v.alice_cert, v.ephemeral)
    );
}
