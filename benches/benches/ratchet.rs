//! The Double Ratchet of `shoal-im`: encrypt plus decrypt of 100-byte
//! messages, one core, no I/O. Two patterns: many messages along one
//! sending chain (a symmetric-key step each), and strictly alternating
//! turns (a Diffie-Hellman ratchet step on every message).
//!
//! ```sh
//! cargo bench -p shoal-benches --bench ratchet
//! ```

#![allow(clippy::unwrap_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use shoal_identity::Keypair;
use shoal_im::{Device, PrekeyBundle, Session, x3dh};

const MESSAGE: [u8; 100] = [0x42; 100];

/// Alice's and Bob's sessions after first contact and one reply, so both
/// have a sending chain.
fn sessions(rng: &mut ChaCha20Rng) -> (Session, Session) {
    let (alice_user, bob_user) = (
        Keypair::from_secret_bytes(&[1; 32]),
        Keypair::from_secret_bytes(&[2; 32]),
    );
    let alice = Device::new(
        &alice_user,
        Keypair::from_secret_bytes(&[3; 32]),
        [4; 32],
        1,
    );
    let bob = Device::new(&bob_user, Keypair::from_secret_bytes(&[5; 32]), [6; 32], 1);
    let (prekey, prekey_secret) = x3dh::signed_prekey(&bob, 1, [7; 32]);
    let bundle = PrekeyBundle {
        certificate: bob.certificate().clone(),
        prekey,
    };
    let (header, mut a) =
        x3dh::initiate_with_rng(rng, &alice, &bob_user.public(), &bundle).unwrap();
    let mut b = x3dh::respond(&bob, &prekey_secret, &header).unwrap();
    let first = a.encrypt(rng, b"hello").unwrap();
    b.decrypt(&first).unwrap();
    let reply = b.encrypt(rng, b"hi").unwrap();
    a.decrypt(&reply).unwrap();
    (a, b)
}

fn bench(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut group = c.benchmark_group("ratchet_100B");
    group.throughput(Throughput::Elements(1));

    let (mut a, mut b) = sessions(&mut rng);
    group.bench_function("one_chain_encrypt_decrypt", |bench| {
        bench.iter(|| {
            let m = a.encrypt(&mut rng, &MESSAGE).unwrap();
            b.decrypt(&m).unwrap()
        })
    });

    let (mut a, mut b) = sessions(&mut rng);
    group.bench_function("alternating_encrypt_decrypt", |bench| {
        // Each iteration is one message; the direction flips every time, so
        // every message starts a new chain with a DH ratchet step.
        let mut alice_turn = true;
        bench.iter(|| {
            let (from, to) = if alice_turn {
                (&mut a, &mut b)
            } else {
                (&mut b, &mut a)
            };
            alice_turn = !alice_turn;
            let m = from.encrypt(&mut rng, &MESSAGE).unwrap();
            to.decrypt(&m).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
