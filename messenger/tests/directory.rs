//! The directory on a small in-memory Kademlia network: one user's device
//! publishes its presence and prekey bundle, another node finds and verifies
//! them, and records for that user published by any other key are refused.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use shoal::{Multiaddr, PeerId, ProtocolId, ServiceBuilder, ServiceControl};
use shoal_identify::LocalRecord;
use shoal_identity::Keypair;
use shoal_im::presence::PresenceRecord;
use shoal_im::{Device, PrekeyBundle, UserId, x3dh};
use shoal_kad::{Config, Handle, Record, SignedRecord, Validator};
use shoal_messenger::directory::{
    self, DirectoryError, PREKEYS_KIND, PRESENCE_KIND, PrekeysValidator, PresenceValidator,
    prekeys_key, presence_key,
};
use shoal_transport::{MemoryNetwork, MemoryTransport};

const KAD: ProtocolId = ProtocolId(1);
const IDENTIFY: ProtocolId = ProtocolId(2);
/// Upper bound for each phase.
const PHASE: Duration = Duration::from_secs(15);
const NODES: usize = 8;
/// Index of Alice's node, of the node that looks her up, and of Mallory's
/// node (which runs without validators so it can try to publish forgeries).
const ALICE: usize = 2;
const BOB: usize = 5;
const MALLORY: usize = 7;

struct Node {
    key: Keypair,
    control: ServiceControl,
    handle: Handle,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn spawn(network: &MemoryNetwork, key: Keypair, validators: bool) -> Node {
    let config = Config {
        request_timeout: Duration::from_secs(2),
        query_timeout: Duration::from_secs(10),
        ..Config::default()
    };
    let (meta, handle, mut events) = shoal_kad::new(KAD, key.peer_id(), config);
    if validators {
        directory::install_validators(&handle);
    }
    let (id_meta, _id_handle, mut id_events) = shoal_identify::new(
        IDENTIFY,
        LocalRecord::new(key.clone()),
        shoal_identify::Config::default(),
    );
    let service = ServiceBuilder::new(key.clone())
        .protocol(meta)
        .protocol(id_meta)
        .transport(MemoryTransport::new(network))
        .build()
        .unwrap();
    let control = service.control();
    tokio::spawn(service);
    control.listen("/memory/0".parse().unwrap()).await.unwrap();
    let feed = handle.clone();
    tokio::spawn(async move {
        while let Some(event) = id_events.recv().await {
            if let shoal_identify::Event::Identified { peer, info, .. } = event {
                feed.add_address(peer, info.listen_addrs.clone());
            }
        }
    });
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    Node {
        key,
        control,
        handle,
    }
}

fn seed(node: &Node) -> (PeerId, Vec<Multiaddr>) {
    (node.key.peer_id(), node.control.listen_addrs())
}

/// A device whose signing key is `node_key`, certified by `user`.
fn device(user: &Keypair, node_key: &Keypair, identity: u8) -> Device {
    Device::new(user, node_key.clone(), [identity; 32], now())
}

fn bundle(device: &Device, secret: u8) -> PrekeyBundle {
    let (prekey, _secret) = x3dh::signed_prekey(device, 1, [secret; 32]);
    PrekeyBundle {
        certificate: device.certificate().clone(),
        prekey,
    }
}

/// A DHT record signed by `signer` and claiming it as publisher.
fn forged(
    signer: &Keypair,
    key: shoal_kad::Key,
    kind: &str,
    value: Vec<u8>,
    seq: u64,
    expires: u64,
) -> SignedRecord {
    SignedRecord::sign(
        signer,
        Record {
            key,
            kind: kind.to_owned(),
            value: Bytes::from(value),
            publisher: signer.peer_id(),
            seq,
            expires,
        },
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_lookup_and_forgeries() {
    let network = MemoryNetwork::new();
    let keys: Vec<Keypair> = (0..NODES)
        .map(|i| Keypair::from_secret_bytes(&[0x60 + i as u8; 32]))
        .collect();
    let mut nodes = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        nodes.push(spawn(&network, key.clone(), i != MALLORY).await);
    }
    let first = seed(&nodes[0]);
    tokio::time::timeout(PHASE, async {
        for node in &nodes[1..] {
            node.handle.bootstrap(vec![first.clone()]).await.unwrap();
        }
    })
    .await
    .expect("bootstrap took too long");

    let alice_user = Keypair::from_secret_bytes(&[0xa1; 32]);
    let alice_id = UserId::new(alice_user.public());
    let alice = device(&alice_user, &keys[ALICE], 0xa3);
    let alice_bundle = bundle(&alice, 0xa4);
    let mallory_user = Keypair::from_secret_bytes(&[0xb1; 32]);
    let mallory = device(&mallory_user, &keys[MALLORY], 0xb3);
    let mallory_bundle = bundle(&mallory, 0xb4);

    let t = now();
    let seq = t;
    let expires = t + 3600;
    let alice_addrs = nodes[ALICE].control.listen_addrs();
    let alice_texts: Vec<String> = alice_addrs.iter().map(|a| a.to_string()).collect();
    let alice_presence = PresenceRecord::sign(&alice, &alice_texts, seq, expires).unwrap();

    // Forgeries for Alice's keys, published by Mallory's key before Alice
    // publishes anything: every node with validators refuses them.
    let forgeries = [
        // Alice's genuine presence, republished under Mallory's key.
        forged(
            &keys[MALLORY],
            presence_key(&alice_id),
            PRESENCE_KIND,
            alice_presence.clone(),
            seq,
            expires,
        ),
        // Mallory's own presence at Alice's key.
        forged(
            &keys[MALLORY],
            presence_key(&alice_id),
            PRESENCE_KIND,
            PresenceRecord::sign::<&str>(&mallory, &["/memory/666"], seq, expires).unwrap(),
            seq,
            expires,
        ),
        // Alice's genuine bundle under Mallory's key, and Mallory's bundle
        // at Alice's key.
        forged(
            &keys[MALLORY],
            prekeys_key(&alice_id),
            PREKEYS_KIND,
            alice_bundle.encode().to_vec(),
            seq,
            expires,
        ),
        forged(
            &keys[MALLORY],
            prekeys_key(&alice_id),
            PREKEYS_KIND,
            mallory_bundle.encode().to_vec(),
            seq,
            expires,
        ),
    ];
    let bob = &nodes[BOB].handle;
    tokio::time::timeout(PHASE, async {
        for (i, record) in forgeries.iter().enumerate() {
            let (stored, _) = nodes[MALLORY]
                .handle
                .put_record(record.clone())
                .await
                .unwrap();
            assert_eq!(stored, 0, "forgery {i} was stored");
            // A node with validators refuses to even send it.
            assert!(matches!(
                bob.put_record(record.clone()).await,
                Err(shoal_kad::HandleError::Core(_))
            ));
        }
        assert_eq!(
            directory::lookup(bob, &alice_id, now()).await.unwrap(),
            None
        );
    })
    .await
    .expect("forgeries took too long");

    // Alice publishes; Bob finds and verifies both records.
    tokio::time::timeout(PHASE, async {
        let (p, b) = directory::publish(
            &nodes[ALICE].handle,
            &alice,
            &alice_addrs,
            &alice_bundle,
            seq,
            3600,
            t,
        )
        .await
        .unwrap();
        assert!(p >= 3 && b >= 3, "stored on {p} / {b} nodes");
        let entry = directory::lookup(bob, &alice_id, now())
            .await
            .unwrap()
            .expect("Alice's presence not found");
        assert_eq!(entry.device, keys[ALICE].peer_id());
        assert_eq!(&entry.certificate, alice.certificate());
        let plain: Vec<Multiaddr> = alice_addrs.iter().map(|a| a.without_peer_id()).collect();
        assert_eq!(entry.addresses, plain);
        assert_eq!(entry.seq, seq);
        assert_eq!(entry.expires, expires);
        assert_eq!(entry.bundle.as_ref(), Some(&alice_bundle));
        // Once Alice's records are out, Mallory's forgeries still change
        // nothing.
        for record in &forgeries {
            let (stored, _) = nodes[MALLORY]
                .handle
                .put_record(record.clone())
                .await
                .unwrap();
            assert_eq!(stored, 0);
        }
        let again = directory::lookup(&nodes[0].handle, &alice_id, now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again, entry);
        // A user with nothing published.
        let nobody = UserId::new(Keypair::from_secret_bytes(&[0xc1; 32]).public());
        assert_eq!(directory::lookup(bob, &nobody, now()).await.unwrap(), None);
        // Alice's lookup, asked for at a time past its expiry, fails.
        assert!(matches!(
            directory::lookup(bob, &alice_id, expires + 3600).await,
            Err(DirectoryError::Im(shoal_im::Error::Expired { .. }))
        ));
    })
    .await
    .expect("publish and lookup took too long");

    for node in &nodes {
        node.control.shutdown().await;
    }
}

/// The DHT keys printed in docs/PROTOCOL.md, section 11.3 (user seed 32 × `31`).
#[test]
fn documented_keys() {
    let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let user = UserId::new(Keypair::from_secret_bytes(&[0x31; 32]).public());
    assert_eq!(
        hex(presence_key(&user).as_bytes()),
        "a79f0f3d1720ea94b985a7318bb78ff52f6768d2237dc338ed0a094223dccc22"
    );
    assert_eq!(
        hex(prekeys_key(&user).as_bytes()),
        "477e7f3b45a636edeab51ae051737d4f35d5f98856f188d4e17f217a23855693"
    );
}

#[test]
fn validators_check_key_publisher_and_value() {
    let alice_user = Keypair::from_secret_bytes(&[0xa1; 32]);
    let alice_id = UserId::new(alice_user.public());
    let alice_key = Keypair::from_secret_bytes(&[0xa2; 32]);
    let alice = device(&alice_user, &alice_key, 0xa3);
    let mallory_key = Keypair::from_secret_bytes(&[0xb2; 32]);
    let mallory = device(&Keypair::from_secret_bytes(&[0xb1; 32]), &mallory_key, 0xb3);
    let (seq, expires) = (7, now() + 600);
    let addrs: Vec<Multiaddr> = vec!["/memory/42".parse().unwrap()];

    let good = directory::presence_record(&alice, &addrs, seq, expires).unwrap();
    assert_eq!(good.record().key, presence_key(&alice_id));
    assert_eq!(good.record().publisher, alice_key.peer_id());
    assert_eq!(PresenceValidator.validate(good.record()), Ok(()));
    // Addresses travel without a /p2p suffix.
    let with_peer = vec![addrs[0].with_peer_id(alice_key.peer_id())];
    let stripped = directory::presence_record(&alice, &with_peer, seq, expires).unwrap();
    assert_eq!(stripped, good);

    let bundle_ = bundle(&alice, 0xa4);
    let good_b = directory::prekeys_record(&alice, &bundle_, seq, expires).unwrap();
    assert_eq!(good_b.record().key, prekeys_key(&alice_id));
    assert_eq!(PrekeysValidator.validate(good_b.record()), Ok(()));
    assert_ne!(prekeys_key(&alice_id), presence_key(&alice_id));

    // Wrong publisher, wrong key, mismatched seq or expiry, garbage value,
    // a value of the other kind.
    let value = good.record().value.clone();
    let mut r = good.record().clone();
    r.publisher = mallory_key.peer_id();
    assert!(PresenceValidator.validate(&r).is_err());
    let mut r = good.record().clone();
    r.key = presence_key(&UserId::new(mallory.certificate().user()));
    assert!(PresenceValidator.validate(&r).is_err());
    let mut r = good.record().clone();
    r.key = prekeys_key(&alice_id);
    assert!(PresenceValidator.validate(&r).is_err());
    let mut r = good.record().clone();
    r.seq += 1;
    assert!(PresenceValidator.validate(&r).is_err());
    let mut r = good.record().clone();
    r.expires += 1;
    assert!(PresenceValidator.validate(&r).is_err());
    let mut r = good.record().clone();
    let mut bytes = value.to_vec();
    bytes[10] ^= 1;
    r.value = Bytes::from(bytes);
    assert!(PresenceValidator.validate(&r).is_err());
    assert!(PresenceValidator.validate(good_b.record()).is_err());
    assert!(PrekeysValidator.validate(good.record()).is_err());
    let mut r = good_b.record().clone();
    r.publisher = mallory_key.peer_id();
    assert!(PrekeysValidator.validate(&r).is_err());
    let mut r = good_b.record().clone();
    r.key = presence_key(&alice_id);
    assert!(PrekeysValidator.validate(&r).is_err());

    // A bundle of another device cannot be published as Alice's.
    assert!(matches!(
        directory::prekeys_record(&alice, &bundle(&mallory, 0xb4), seq, expires),
        Err(DirectoryError::Im(shoal_im::Error::WrongUser))
    ));
    // Too many addresses.
    let many = vec![addrs[0].clone(); 17];
    assert!(matches!(
        directory::presence_record(&alice, &many, seq, expires),
        Err(DirectoryError::Im(shoal_im::Error::Malformed { .. }))
    ));
}
