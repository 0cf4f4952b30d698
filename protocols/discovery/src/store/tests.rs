//! Unit tests of `store.rs`.

use shoal_identity::Keypair;

use super::*;

fn record(key: &Keypair, seq: u64, addrs: &[&str]) -> SignedPeerRecord {
    let addrs = addrs.iter().map(|a| a.parse().unwrap()).collect();
    SignedPeerRecord::sign(key, seq, addrs).unwrap()
}

fn backoff() -> Backoff {
    Backoff {
        base: Duration::from_secs(1),
        max: Duration::from_secs(8),
        max_failures: 3,
    }
}

#[tokio::test(start_paused = true)]
async fn newer_records_replace_older_ones_never_the_reverse() {
    let me = Keypair::generate();
    let p = Keypair::generate();
    let mut store = PeerStore::new(me.peer_id(), 10);
    let now = Instant::now();
    assert_eq!(
        store.insert_record(record(&me, 1, &[]), now, &|_| true),
        Inserted::Dropped
    );
    assert_eq!(
        store.insert_record(record(&p, 5, &["/memory/1"]), now, &|_| true),
        Inserted::New
    );
    assert_eq!(
        store.insert_record(record(&p, 4, &["/memory/2"]), now, &|_| true),
        Inserted::Unchanged
    );
    assert_eq!(
        store.insert_record(record(&p, 5, &["/memory/3"]), now, &|_| true),
        Inserted::Unchanged
    );
    let addr1: Multiaddr = "/memory/1".parse().unwrap();
    store.dial_succeeded(p.peer_id(), &addr1, now);
    assert_eq!(
        store.insert_record(record(&p, 6, &["/memory/4"]), now, &|_| true),
        Inserted::Updated
    );
    let info = store.get(&p.peer_id(), now).unwrap();
    assert_eq!(info.record.unwrap().seq(), 6);
    // The new address, plus the verified one the record dropped.
    let addrs: Vec<_> = info
        .addrs
        .iter()
        .map(|a| (a.addr.to_string(), a.verified))
        .collect();
    assert_eq!(
        addrs,
        vec![("/memory/4".into(), false), ("/memory/1".into(), true)]
    );
}

#[tokio::test(start_paused = true)]
async fn addresses_narrower_than_their_source_are_not_dialled() {
    let me = Keypair::generate();
    let p = Keypair::generate();
    let mut store = PeerStore::new(me.peer_id(), 10);
    let now = Instant::now();
    let policy = shoal_transport::ScopePolicy::default();
    let source: Multiaddr = "/ip4/1.2.3.4/tcp/4001".parse().unwrap();
    let from_internet = |a: &Multiaddr| policy.allows(a, Some(&source));
    let addrs = [
        "/ip4/192.168.1.1/tcp/22",
        "/ip4/127.0.0.1/tcp/1",
        "/ip4/5.6.7.8/tcp/1",
    ];
    store.insert_record(record(&p, 1, &addrs), now, &from_internet);
    let picked = store.dial_candidates(now, 5, &HashSet::new());
    assert_eq!(
        picked,
        vec![(p.peer_id(), "/ip4/5.6.7.8/tcp/1".parse().unwrap())]
    );
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_then_remove_and_success_verifies() {
    let me = Keypair::generate();
    let p = Keypair::generate();
    let mut store = PeerStore::new(me.peer_id(), 10);
    let now = Instant::now();
    store.insert_record(record(&p, 1, &["/memory/1", "/memory/2"]), now, &|_| true);
    let none = HashSet::new();
    let picked = store.dial_candidates(now, 5, &none);
    assert_eq!(picked, vec![(p.peer_id(), "/memory/1".parse().unwrap())]);
    // Dialling: not picked twice.
    assert!(store.dial_candidates(now, 5, &none).is_empty());
    assert_eq!(
        store.dial_failed(p.peer_id(), &picked[0].1, now, &backoff()),
        DialFailure::Counted(1)
    );
    // In backoff for 1 s; then the other address is preferred.
    assert!(store.dial_candidates(now, 5, &none).is_empty());
    let later = now + Duration::from_secs(1);
    let picked = store.dial_candidates(later, 5, &none);
    assert_eq!(picked[0].1, "/memory/2".parse().unwrap());
    assert_eq!(
        store.dial_failed(p.peer_id(), &picked[0].1, later, &backoff()),
        DialFailure::Counted(2)
    );
    let later = later + Duration::from_secs(2);
    let picked = store.dial_candidates(later, 5, &none);
    assert_eq!(
        store.dial_failed(p.peer_id(), &picked[0].1, later, &backoff()),
        DialFailure::Removed
    );
    assert_eq!(store.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn relay_expiry_and_eviction_follow_the_trust_rule() {
    let me = Keypair::generate();
    let (a, b, c) = (
        Keypair::generate(),
        Keypair::generate(),
        Keypair::generate(),
    );
    let mut store = PeerStore::new(me.peer_id(), 2);
    let t0 = Instant::now();
    let ttl = Duration::from_secs(10);
    store.insert_record(record(&a, 1, &["/memory/1"]), t0, &|_| true);
    store.insert_record(record(&b, 1, &["/memory/2"]), t0, &|_| true);
    // Nothing verified or connected: nothing to relay.
    assert!(store.relayable(t0, ttl, me.peer_id()).is_empty());
    store.session_opened(a.peer_id(), t0);
    store.dial_succeeded(b.peer_id(), &"/memory/2".parse().unwrap(), t0);
    assert_eq!(store.relayable(t0, ttl, me.peer_id()).len(), 2);
    assert_eq!(store.relayable(t0, ttl, a.peer_id()).len(), 1);
    // Full of connected or verified entries: an unverified newcomer is
    // dropped, never evicts them.
    assert_eq!(
        store.insert_record(record(&c, 1, &["/memory/3"]), t0, &|_| true),
        Inserted::Dropped
    );
    // B (verified, not connected) stops being relayed and expires after
    // the TTL; A stays while connected.
    let late = t0 + ttl + Duration::from_secs(1);
    assert_eq!(store.relayable(late, ttl, me.peer_id()).len(), 1);
    assert_eq!(store.expire(late, ttl), vec![b.peer_id()]);
    store.session_closed(a.peer_id(), late);
    assert!(store.expire(late, ttl).is_empty());
    assert_eq!(
        store.insert_record(record(&c, 1, &["/memory/3"]), late, &|_| true),
        Inserted::New
    );
    // Now full with A (verified? no: only connected before) and C, both
    // unverified: a newcomer evicts the one heard of longest ago.
    let d = Keypair::generate();
    let later = late + Duration::from_secs(1);
    store.insert_record(record(&c, 1, &["/memory/3"]), later, &|_| true);
    assert_eq!(
        store.insert_record(record(&d, 1, &["/memory/4"]), later, &|_| true),
        Inserted::Evicted(a.peer_id())
    );
}
