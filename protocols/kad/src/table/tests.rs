//! Unit tests of `table.rs`.

use super::*;

fn limits(k: usize) -> TableLimits {
    TableLimits {
        k,
        bucket_ip_limit: 2,
        table_ip_limit: 3,
        replacement_cache: 2,
    }
}

/// Peers whose keys land in the farthest bucket (255) of `local`.
fn peers_in_bucket(local: &Key, bucket: usize, n: usize) -> Vec<PeerId> {
    (0u32..)
        .map(|i| {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&i.to_be_bytes());
            PeerId::from_bytes(b)
        })
        .filter(|p| local.distance(&Key::for_peer(p)).bucket_index() == Some(bucket))
        .take(n)
        .collect()
}

fn mem(i: usize) -> Vec<Multiaddr> {
    vec![format!("/memory/{i}").parse().unwrap()]
}

fn ip(a: u8, b: u8, c: u8, d: u8) -> Vec<Multiaddr> {
    vec![format!("/ip4/{a}.{b}.{c}.{d}/tcp/1").parse().unwrap()]
}

#[test]
fn full_bucket_pings_oldest_and_keeps_it_if_alive() {
    let local = Key::from_bytes([0; 32]);
    let mut t = RoutingTable::new(local, limits(2));
    let p = peers_in_bucket(&local, 255, 4);
    assert_eq!(
        t.update(Contact::new(p[0], mem(0))),
        Update::Inserted { bucket: 255 }
    );
    assert_eq!(
        t.update(Contact::new(p[1], mem(1))),
        Update::Inserted { bucket: 255 }
    );
    // Seen again: moves to the tail, p[1] is now the oldest.
    assert_eq!(t.update(Contact::new(p[0], mem(0))), Update::Refreshed);
    let Update::Ping(oldest) = t.update(Contact::new(p[2], mem(2))) else {
        panic!("expected a ping");
    };
    assert_eq!(oldest.peer, p[1]);
    // A second newcomer while the ping is in flight is only cached.
    assert_eq!(t.update(Contact::new(p[3], mem(3))), Update::Cached);
    // The oldest answers: it stays, now most recently seen.
    assert_eq!(t.ping_result(&p[1], true), Change::default());
    let order: Vec<_> = t.bucket(255).map(|c| c.peer).collect();
    assert_eq!(order, vec![p[0], p[1]]);
    // Next newcomer: ping p[0], which is dead → evicted for p[2].
    let Update::Ping(oldest) = t.update(Contact::new(p[2], mem(2))) else {
        panic!("expected a ping");
    };
    assert_eq!(oldest.peer, p[0]);
    let change = t.ping_result(&p[0], false);
    assert_eq!(change.removed, Some(p[0]));
    assert_eq!(change.inserted.map(|c| c.peer), Some(p[2]));
    let order: Vec<_> = t.bucket(255).map(|c| c.peer).collect();
    assert_eq!(order, vec![p[1], p[2]]);
    assert_eq!(t.len(), 2);
}

#[test]
fn failures_remove_and_promote_replacements() {
    let local = Key::from_bytes([0; 32]);
    let mut t = RoutingTable::new(local, limits(2));
    let p = peers_in_bucket(&local, 255, 4);
    t.update(Contact::new(p[0], mem(0)));
    t.update(Contact::new(p[1], mem(1)));
    assert!(matches!(
        t.update(Contact::new(p[2], mem(2))),
        Update::Ping(_)
    ));
    assert_eq!(t.update(Contact::new(p[3], mem(3))), Update::Cached);
    // p[1] fails twice: removed; the most recent replacement (p[3]) moves in.
    assert_eq!(t.record_failure(&p[1], 2), Change::default());
    let change = t.record_failure(&p[1], 2);
    assert_eq!(change.removed, Some(p[1]));
    assert_eq!(change.inserted.map(|c| c.peer), Some(p[3]));
    // Removing the pinged contact hands its slot to the waiting newcomer.
    let change = t.remove(&p[0]);
    assert_eq!(change.removed, Some(p[0]));
    assert_eq!(change.inserted.map(|c| c.peer), Some(p[2]));
    assert!(t.contains(&p[2]) && t.contains(&p[3]));
    assert_eq!(t.len(), 2);
}

#[test]
fn prefix_caps_per_bucket_and_table() {
    let local = Key::from_bytes([0; 32]);
    let mut t = RoutingTable::new(local, limits(20));
    let far = peers_in_bucket(&local, 255, 4);
    let near = peers_in_bucket(&local, 254, 4);
    assert!(matches!(
        t.update(Contact::new(far[0], ip(10, 0, 0, 1))),
        Update::Inserted { .. }
    ));
    assert!(matches!(
        t.update(Contact::new(far[1], ip(10, 0, 0, 2))),
        Update::Inserted { .. }
    ));
    // Third of the same /24 in one bucket: cached, not inserted.
    assert_eq!(
        t.update(Contact::new(far[2], ip(10, 0, 0, 3))),
        Update::Cached
    );
    // Another /24 is fine.
    assert!(matches!(
        t.update(Contact::new(far[3], ip(10, 0, 1, 3))),
        Update::Inserted { .. }
    ));
    // Table-wide cap of 3 for 10.0.0.0/24: one more in another bucket fits,
    // the next does not.
    assert!(matches!(
        t.update(Contact::new(near[0], ip(10, 0, 0, 9))),
        Update::Inserted { .. }
    ));
    assert_eq!(
        t.update(Contact::new(near[1], ip(10, 0, 0, 10))),
        Update::Cached
    );
    // Loopback and memory addresses are not capped.
    for (i, p) in near[1..].iter().enumerate() {
        let addrs = if i % 2 == 0 { ip(127, 0, 0, 1) } else { mem(i) };
        assert!(matches!(
            t.update(Contact::new(*p, addrs)),
            Update::Inserted { .. }
        ));
    }
    // Removing one frees a slot for the cached contact of its bucket.
    let change = t.remove(&far[0]);
    assert_eq!(change.inserted.map(|c| c.peer), Some(far[2]));
}

#[test]
fn closest_is_sorted_and_excludes() {
    let local = Key::from_bytes([0; 32]);
    let mut t = RoutingTable::new(local, limits(20));
    let peers: Vec<PeerId> = (0u8..60).map(|i| PeerId::from_bytes([i; 32])).collect();
    for (i, p) in peers.iter().enumerate() {
        t.update(Contact::new(*p, mem(i)));
    }
    let target = Key::for_peer(&peers[7]);
    let got = t.closest(&target, 5, None);
    assert_eq!(got.len(), 5);
    assert_eq!(got[0].peer, peers[7]);
    let d: Vec<_> = got.iter().map(|c| c.key.distance(&target)).collect();
    assert!(d.windows(2).all(|w| w[0] <= w[1]));
    let mut all: Vec<_> = t.iter().map(|c| c.key.distance(&target)).collect();
    all.sort();
    assert_eq!(d, all[..5]);
    let got = t.closest(&target, 5, Some(&peers[7]));
    assert!(got.iter().all(|c| c.peer != peers[7]));
    // Against brute force, for targets near and far, and the local key.
    let mut targets: Vec<Key> = (0u8..40)
        .map(|i| Key::for_peer(&PeerId::from_bytes([i * 3; 32])))
        .collect();
    targets.push(local);
    targets.push(Key::from_bytes([0xff; 32]));
    for target in targets {
        for n in [1, 3, 20, 100] {
            let got: Vec<_> = t
                .closest(&target, n, None)
                .iter()
                .map(|c| c.key.distance(&target))
                .collect();
            let mut all: Vec<_> = t.iter().map(|c| c.key.distance(&target)).collect();
            all.sort();
            all.truncate(n);
            assert_eq!(got, all);
        }
    }
}

#[test]
fn a_disconnected_contact_is_not_live_until_heard_from_again() {
    let local = Key::from_bytes([0; 32]);
    let mut table = RoutingTable::new(local, limits(20));
    let peers = peers_in_bucket(&local, 255, 3);
    for (i, p) in peers.iter().enumerate() {
        table.update(Contact::new(*p, mem(i)));
    }
    let target = Key::from_bytes([0xff; 32]);
    let live = |t: &RoutingTable| t.closest_verified_where(&target, 10, |_| true).len();
    assert_eq!(live(&table), 3);
    table.mark_disconnected(&peers[0]);
    assert_eq!(live(&table), 2, "gone, as far as we know");
    assert_eq!(
        table.closest_where(&target, 10, |_| true).len(),
        3,
        "still in the table, and still tried by lookups"
    );
    table.update(Contact::new(peers[0], mem(0)));
    assert_eq!(live(&table), 3, "heard from again");
}
