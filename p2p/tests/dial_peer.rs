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
    // A new address is news: it is tried at once, backoff or not.
    let other: Multiaddr = "/memory/987655".parse().unwrap();
    a.control
        .add_addresses(pc, std::slice::from_ref(&other), AddressSource::Peer);
    let third = a.control.dial_peer(pc, DialOptions::default()).await;
    assert!(
        matches!(third, Err(ref e) if !e.is_local()),
        "a real attempt: {third:?}"
    );
    a.control.shutdown().await;
    b.control.shutdown().await;
}

/// Calls to reach one peer at the same moment (a lookup's answer and a
/// retry timer, say) share one dial: one connection, one session, and
/// every caller gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_dials_of_one_peer_share_one_connection() {
    let network = MemoryNetwork::new();
    let a = memory_node(&network, true, |b| b).await;
    let mut b = memory_node(&network, true, |b| b).await;
    let pb = b.control.local_peer_id();
    let live = b.addr.clone().unwrap();
    a.control
        .add_addresses(pb, std::slice::from_ref(&live), AddressSource::Peer);
    let dials: Vec<_> = (0..8)
        .map(|_| {
            let control = a.control.clone();
            tokio::spawn(async move { control.dial_peer(pb, DialOptions::default()).await })
        })
        .collect();
    let mut ids = Vec::new();
    for dial in dials {
        ids.push(dial.await.unwrap().unwrap().id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every caller got the same session");
    b.wait_for("the session", |n| {
        matches!(
            n,
            common::Notice::Event(shoal::ServiceEvent::SessionOpened { .. })
        )
    })
    .await;
    // No second inbound session arrives.
    let second = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            match b.notices.recv().await {
                Some(common::Notice::Event(shoal::ServiceEvent::SessionOpened { .. })) => {
                    return true;
                }
                Some(_) => {}
                None => return false,
            }
        }
    })
    .await;
    assert!(!matches!(second, Ok(true)), "a second connection was made");
    a.control.shutdown().await;
    b.control.shutdown().await;
}

/// Node `a` (TCP besides memory, with a long handshake timeout), node `b`
/// on memory, and a TCP address of `b`'s whose connections complete (the
/// kernel accepts them) and then hear nothing: keep the listener alive.
async fn with_a_silent_address(
    network: &MemoryNetwork,
) -> (common::Node, common::Node, Multiaddr, std::net::TcpListener) {
    let a = memory_node(network, true, |b| {
        b.transport(shoal_transport::TcpTransport::default())
            .config(shoal::config::Config {
                handshake_timeout: Duration::from_secs(30),
                ..shoal::config::Config::default()
            })
    })
    .await;
    let b = memory_node(network, true, |b| b).await;
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr: Multiaddr = silent.local_addr().unwrap().into();
    (a, b, silent_addr, silent)
}

/// A best address that swallows the dial (here a TCP port whose listener
/// never answers the secure handshake) does not hold the dial for its
/// whole timeout: the next address is tried after the stagger, and the
/// first to answer wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_best_address_does_not_hold_the_dial() {
    let network = MemoryNetwork::new();
    let (a, b, silent_addr, silent) = with_a_silent_address(&network).await;
    let pb = b.control.local_peer_id();
    a.control
        .add_addresses(pb, std::slice::from_ref(&silent_addr), AddressSource::Peer);
    a.control.add_addresses(
        pb,
        std::slice::from_ref(b.addr.as_ref().unwrap()),
        AddressSource::Hearsay,
    );
    assert_eq!(
        a.control.addresses(&pb)[0],
        silent_addr,
        "the silent one first"
    );
    let session = tokio::time::timeout(
        Duration::from_secs(10),
        a.control.dial_peer(pb, DialOptions::default()),
    )
    .await
    .expect("the live address answered long before the handshake timeout")
    .unwrap();
    assert_eq!(session.peer, pb);
    drop(silent);
    a.control.shutdown().await;
    b.control.shutdown().await;
}

/// A dial that has only a silent address picks up an address learned
/// while it runs (a contact's fresh record, with the relay it just
/// reserved on): the dial does not wait out the silent one first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_learned_during_a_dial_joins_it() {
    let network = MemoryNetwork::new();
    let (a, b, silent_addr, silent) = with_a_silent_address(&network).await;
    let pb = b.control.local_peer_id();
    a.control
        .add_addresses(pb, std::slice::from_ref(&silent_addr), AddressSource::Peer);
    let dial = {
        let control = a.control.clone();
        tokio::spawn(async move { control.dial_peer(pb, DialOptions::default()).await })
    };
    // Well into the dial (past the stagger, with nothing else to try).
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!dial.is_finished(), "the silent address holds the dial");
    a.control.add_addresses(
        pb,
        std::slice::from_ref(b.addr.as_ref().unwrap()),
        AddressSource::Hearsay,
    );
    let session = tokio::time::timeout(Duration::from_secs(10), dial)
        .await
        .expect("the new address answered long before the handshake timeout")
        .unwrap()
        .unwrap();
    assert_eq!(session.peer, pb);
    drop(silent);
    a.control.shutdown().await;
    b.control.shutdown().await;
}
