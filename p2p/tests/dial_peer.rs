//! Dialling by peer id through the service's address book: addresses learnt
//! from the application are tried, the one that answered becomes the best,
//! a peer nobody knows an address of is an error, and a peer whose
//! addresses all failed is left alone for a doubling backoff.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::memory_node;
use shoal::address_book::AddressSource;
use shoal::{DialError, DialOptions};
use shoal_identity::Keypair;
use shoal_transport::{MemoryNetwork, Multiaddr};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_peer_uses_the_book_and_backs_off() {
    let network = MemoryNetwork::new();
    let a = memory_node(&network, true, |b| b).await;
    let b = memory_node(&network, true, |b| b).await;
    let pb = b.control.local_peer_id();

    // Nobody told a where b is.
    assert!(matches!(
        a.control.dial_peer(pb, DialOptions::default()).await,
        Err(DialError::NoAddress(p)) if p == pb
    ));

    // A dead address first, then the real one: the live one answers and
    // is tried first from then on.
    let dead: Multiaddr = "/memory/987654".parse().unwrap();
    let live = b.addr.clone().unwrap();
    a.control
        .add_addresses(pb, std::slice::from_ref(&dead), AddressSource::Peer);
    a.control
        .add_addresses(pb, std::slice::from_ref(&live), AddressSource::Hearsay);
    let session = a
        .control
        .dial_peer(pb, DialOptions::default())
        .await
        .unwrap();
    assert_eq!(session.peer, pb);
    assert_eq!(a.control.addresses(&pb)[0], live.without_peer_id());
    let book = a.control.address_book();
    let entry = &book.iter().find(|(p, _)| *p == pb).unwrap().1[0];
    assert_eq!(entry.source, AddressSource::Dialled);
    // Connected: the session is returned, nothing is dialled.
    let again = a
        .control
        .dial_peer(pb, DialOptions::default())
        .await
        .unwrap();
    assert_eq!(again.id, session.id);

    // A peer whose only address is dead: a failure, then a backoff that
    // sends nothing, then (after it) a real attempt and a longer backoff.
    let pc = Keypair::generate().peer_id();
    a.control
        .add_addresses(pc, std::slice::from_ref(&dead), AddressSource::Application);
    let first = a.control.dial_peer(pc, DialOptions::default()).await;
    assert!(matches!(first, Err(ref e) if !e.is_local()), "{first:?}");
    match a.control.dial_peer(pc, DialOptions::default()).await {
        Err(DialError::Backoff { peer, wait }) => {
            assert_eq!(peer, pc);
            assert!(wait <= Duration::from_secs(1), "{wait:?}");
        }
        other => panic!("no backoff: {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let second = a.control.dial_peer(pc, DialOptions::default()).await;
    assert!(matches!(second, Err(ref e) if !e.is_local()), "{second:?}");
    match a.control.dial_peer(pc, DialOptions::default()).await {
        Err(DialError::Backoff { wait, .. }) => {
            assert!(wait > Duration::from_secs(1), "doubled: {wait:?}");
        }
        other => panic!("no backoff: {other:?}"),
    }
    a.control.shutdown().await;
    b.control.shutdown().await;
}
