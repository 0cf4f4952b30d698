//! Relays on the in-memory transport: a peer reaches a node only through
//! the node's relay; only protocols declared for relays run on that
//! session; a relay that changes a byte breaks the end-to-end handshake;
//! a circuit over its byte limit is cut without touching another; losing
//! a relay leaves the node reachable through its second one.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use shoal::{
    DialError, DialOptions, ProtocolId, ProtocolMeta, RawStreams, ServiceBuilder, ServiceControl,
    negotiation::{NegotiationError, RefuseReason},
};
use shoal_identity::{Keypair, PeerId};
use shoal_relay::{
    Config, HOP_PROTOCOL, Limits, Relay, RelayHandle,
    protocol::{HopMessage, Status, StatusCode, StopMessage},
};
use shoal_transport::{MemoryNetwork, MemoryTransport, Multiaddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOP: ProtocolId = ProtocolId(20);
const STOP: ProtocolId = ProtocolId(21);
const CHAT: ProtocolId = ProtocolId(30);
const BULK: ProtocolId = ProtocolId(31);
/// Bound on every wait in these tests.
const LIMIT: Duration = Duration::from_secs(20);

struct Node {
    control: ServiceControl,
    relay: RelayHandle,
    addr: Multiaddr,
    chat: RawStreams,
    _bulk: RawStreams,
}

impl Node {
    fn peer(&self) -> PeerId {
        self.control.local_peer_id()
    }
}

/// A node on `network` with the relay parts of `config`, an echo-able
/// "chat" protocol allowed over relays and a "bulk" one that is not.
async fn node(network: &MemoryNetwork, config: Config) -> Node {
    let mut relay = Relay::new(HOP, STOP, config);
    let (chat_meta, chat) = ProtocolMeta::builder(CHAT, "/test/chat")
        .over_relay(true)
        .raw_streams();
    let (bulk_meta, bulk) = ProtocolMeta::builder(BULK, "/test/bulk").raw_streams();
    let builder = ServiceBuilder::new(Keypair::generate())
        .transport(MemoryTransport::new(network))
        .protocol(chat_meta)
        .protocol(bulk_meta);
    let service = relay.install(builder).build().unwrap();
    let control = service.control();
    tokio::spawn(service);
    let addr = control.listen("/memory/0".parse().unwrap()).await.unwrap();
    let addr = addr.with_peer_id(control.local_peer_id());
    let relay = relay.start(control.clone()).await;
    Node {
        control,
        relay,
        addr,
        chat,
        _bulk: bulk,
    }
}

fn serving() -> Config {
    Config {
        serve: Some(Limits::default()),
        ..Config::default()
    }
}

fn reserving_on(relays: &[&Node]) -> Config {
    Config {
        relays: relays.iter().map(|r| r.addr.clone()).collect(),
        retry_interval: Duration::from_millis(200),
        ..Config::default()
    }
}

/// Waits until `node` has `n` relay addresses, and returns them.
async fn relay_addrs(node: &Node, n: usize) -> Vec<Multiaddr> {
    let mut addrs = node.relay.addrs();
    tokio::time::timeout(LIMIT, addrs.wait_for(|a| a.len() == n))
        .await
        .expect("reservations in time")
        .unwrap()
        .clone()
}

/// Echoes every chat stream of `node`.
fn echo(mut node_chat: RawStreams) {
    tokio::spawn(async move {
        while let Some(mut stream) = node_chat.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_reaches_a_node_only_through_its_relay() {
    let network = MemoryNetwork::new();
    let relay = node(&network, serving()).await;
    let bob = node(&network, reserving_on(&[&relay])).await;
    let alice = node(&network, Config::default()).await;
    let addrs = relay_addrs(&bob, 1).await;
    assert_eq!(bob.relay.reserved(), vec![relay.peer()]);
    assert_eq!(
        addrs[0].to_string(),
        format!("{}/p2p-circuit", relay.addr),
        "the relay's address and the circuit"
    );
    assert!(
        bob.control.announce_addrs().contains(&addrs[0]),
        "relay addresses are announced"
    );
    assert!(
        !bob.control
            .announce_addrs()
            .iter()
            .any(|a| a.to_string() == "/p2p-circuit"),
        "listening for circuits is no address"
    );
    let Node {
        chat: bob_chat,
        control: bob_control,
        ..
    } = bob;
    echo(bob_chat);

    let target = addrs[0].with_peer_id(bob_control.local_peer_id());
    let session = tokio::time::timeout(LIMIT, alice.control.dial(target, DialOptions::default()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.peer, bob_control.local_peer_id());
    assert!(session.is_relayed());

    // Chat runs end to end through the relay.
    let mut chat = alice
        .control
        .open_raw_stream(session.id, CHAT)
        .await
        .unwrap();
    chat.write_all(b"hello through the relay").await.unwrap();
    let mut back = [0; 23];
    tokio::time::timeout(LIMIT, chat.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"hello through the relay");

    // Bulk does not, in either direction.
    let refused = alice.control.open_raw_stream(session.id, BULK).await;
    assert!(
        matches!(
            refused,
            Err(shoal::ControlError::Negotiation(NegotiationError::Refused(
                RefuseReason::NotOverRelay
            )))
        ),
        "{refused:?}"
    );
    let stats = relay.relay.server().unwrap().stats();
    assert_eq!(stats.reservations, 1);
    assert_eq!(stats.circuits, 1);
    assert!(stats.bytes_forwarded > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_a_reservation_cannot_be_reached_and_a_node_that_does_not_serve_refuses() {
    let network = MemoryNetwork::new();
    let relay = node(&network, serving()).await;
    let plain = node(&network, Config::default()).await;
    let bob = node(&network, Config::default()).await;
    let alice = node(&network, Config::default()).await;
    let through = |r: &Node| {
        format!("{}/p2p-circuit/p2p/{}", r.addr, bob.peer())
            .parse::<Multiaddr>()
            .unwrap()
    };
    let no_reservation = alice
        .control
        .dial(through(&relay), DialOptions::default())
        .await;
    assert!(
        matches!(&no_reservation, Err(DialError::Transport(e)) if e.to_string().contains("NoReservation")),
        "{no_reservation:?}"
    );
    // A node that is not a relay refuses the hop protocol.
    let not_a_relay = alice
        .control
        .dial(through(&plain), DialOptions::default())
        .await;
    assert!(not_a_relay.is_err(), "{not_a_relay:?}");
    assert_eq!(relay.relay.server().unwrap().stats().refused, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_over_its_byte_limit_is_cut_and_another_goes_on() {
    let network = MemoryNetwork::new();
    let relay = node(
        &network,
        Config {
            serve: Some(Limits {
                circuit_bytes: 256 * 1024,
                ..Limits::default()
            }),
            ..Config::default()
        },
    )
    .await;
    let bob = node(&network, reserving_on(&[&relay])).await;
    let addr = relay_addrs(&bob, 1).await[0].with_peer_id(bob.peer());
    let Node {
        chat: bob_chat,
        control: bob_control,
        ..
    } = bob;
    echo(bob_chat);
    let greedy = node(&network, Config::default()).await;
    let modest = node(&network, Config::default()).await;
    let greedy_session = greedy
        .control
        .dial(addr.clone(), DialOptions::default())
        .await
        .unwrap();
    let modest_session = modest
        .control
        .dial(addr, DialOptions::default())
        .await
        .unwrap();
    assert_eq!(relay.relay.server().unwrap().stats().circuits, 2);

    // The greedy peer pushes a megabyte through an echo: its circuit is
    // cut at the limit and its session ends.
    let mut stream = greedy
        .control
        .open_raw_stream(greedy_session.id, CHAT)
        .await
        .unwrap();
    let pushed = tokio::time::timeout(LIMIT, async {
        let chunk = vec![7u8; 16 * 1024];
        let mut buf = vec![0u8; 16 * 1024];
        for _ in 0..64 {
            if stream.write_all(&chunk).await.is_err() {
                return false;
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
        true
    })
    .await
    .unwrap();
    assert!(!pushed, "a megabyte went through a 256 KiB circuit");
    tokio::time::timeout(LIMIT, async {
        while greedy.control.session(greedy_session.id).is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the greedy session ends");

    // The other circuit still carries chat.
    let mut chat = modest
        .control
        .open_raw_stream(modest_session.id, CHAT)
        .await
        .unwrap();
    chat.write_all(b"still here").await.unwrap();
    let mut back = [0; 10];
    tokio::time::timeout(LIMIT, chat.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"still here");
    assert!(
        bob_control
            .sessions()
            .iter()
            .any(|s| s.peer == modest.control.local_peer_id()),
        "bob keeps the other session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_relay_leaves_the_node_reachable_through_the_other() {
    let network = MemoryNetwork::new();
    let first = node(&network, serving()).await;
    let second = node(&network, serving()).await;
    let third = node(&network, serving()).await;
    let bob = node(&network, reserving_on(&[&first, &second])).await;
    let addrs = relay_addrs(&bob, 2).await;
    first.control.shutdown().await;
    // The lost reservation's address goes, the other stays, and the third
    // relay, once known, takes the free place.
    let left = relay_addrs(&bob, 1).await;
    assert_eq!(left, vec![addrs[1].clone()]);
    assert!(!bob.control.announce_addrs().contains(&addrs[0]));
    assert!(bob.relay.add_relay(third.addr.clone()));
    let now = relay_addrs(&bob, 2).await;
    assert!(now.contains(&addrs[1]));
    let alice = node(&network, Config::default()).await;
    let session = alice
        .control
        .dial(addrs[1].with_peer_id(bob.peer()), DialOptions::default())
        .await
        .unwrap();
    assert_eq!(session.peer, bob.peer());
}

/// A node that needs no relay (checks found it reachable) lets its
/// reservations go: the relay frees them, the relayed addresses are no
/// longer announced; wanted again, they come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_reserving_frees_the_relay() {
    let network = MemoryNetwork::new();
    let relay = node(&network, serving()).await;
    let bob = node(&network, reserving_on(&[&relay])).await;
    let addrs = relay_addrs(&bob, 1).await;
    let reservations = || relay.relay.server().unwrap().stats().reservations;
    assert_eq!(reservations(), 1);
    bob.relay.set_reserving(false);
    assert!(relay_addrs(&bob, 0).await.is_empty());
    assert!(!bob.control.announce_addrs().contains(&addrs[0]));
    let freed = async {
        while reservations() != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(LIMIT, freed)
        .await
        .expect("the relay frees the reservation");
    bob.relay.set_reserving(true);
    assert_eq!(relay_addrs(&bob, 1).await, addrs);
    assert_eq!(reservations(), 1);
}

/// Which byte of a circuit the tampering relay flips: one of the
/// initiator's ephemeral key in its first handshake message (a 2-byte
/// length, version, suite, then the key).
const FLIP: usize = 20;

/// A relay that speaks the protocol and flips one byte of each circuit.
async fn tampering_relay(network: &MemoryNetwork) -> (ServiceControl, Multiaddr) {
    let (hop_meta, mut hop) = ProtocolMeta::builder(HOP, HOP_PROTOCOL).raw_streams();
    let (stop_meta, _stop) = ProtocolMeta::builder(STOP, shoal_relay::STOP_PROTOCOL).raw_streams();
    let service = ServiceBuilder::new(Keypair::generate())
        .transport(MemoryTransport::new(network))
        .protocol(hop_meta)
        .protocol(stop_meta)
        .build()
        .unwrap();
    let control = service.control();
    tokio::spawn(service);
    let addr = control.listen("/memory/0".parse().unwrap()).await.unwrap();
    let addr = addr.with_peer_id(control.local_peer_id());
    let relay_control = control.clone();
    tokio::spawn(async move {
        let reserved = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        while let Some(mut stream) = hop.accept().await {
            let control = relay_control.clone();
            let reserved = reserved.clone();
            tokio::spawn(async move {
                match HopMessage::read(&mut stream).await {
                    Ok(HopMessage::Reserve) => {
                        reserved.lock().unwrap().push(stream.session().id);
                        let ok = Status {
                            code: StatusCode::Ok,
                            ttl_secs: 3600,
                            limit: None,
                        };
                        HopMessage::Status(ok).write(&mut stream).await.unwrap();
                        let _ = stream.read(&mut [0; 1]).await;
                    }
                    Ok(HopMessage::Connect(_)) => {
                        let session = reserved.lock().unwrap()[0];
                        let mut dst = control.open_raw_stream(session, STOP).await.unwrap();
                        let incoming = StopMessage::Incoming {
                            peer: stream.session().peer,
                            limit: None,
                        };
                        incoming.write(&mut dst).await.unwrap();
                        StopMessage::read(&mut dst).await.unwrap();
                        HopMessage::Status(Status::new(StatusCode::Ok))
                            .write(&mut stream)
                            .await
                            .unwrap();
                        // Forward, flipping a byte of the dialler's first
                        // handshake message (inside its ephemeral key).
                        let (mut sr, mut sw) = tokio::io::split(stream);
                        let (mut dr, mut dw) = tokio::io::split(dst);
                        let up = async {
                            let mut buf = vec![0; 4096];
                            let mut seen = 0usize;
                            loop {
                                let n = match sr.read(&mut buf).await {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => n,
                                };
                                if seen <= FLIP && seen + n > FLIP {
                                    buf[FLIP - seen] ^= 0x01;
                                }
                                seen += n;
                                if dw.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        };
                        let down = async {
                            let _ = tokio::io::copy(&mut dr, &mut sw).await;
                        };
                        tokio::join!(up, down);
                    }
                    _ => {}
                }
            });
        }
    });
    (control, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_changes_a_byte_makes_the_handshake_fail() {
    let network = MemoryNetwork::new();
    let (_relay, relay_addr) = tampering_relay(&network).await;
    let bob = node(
        &network,
        Config {
            relays: vec![relay_addr],
            ..Config::default()
        },
    )
    .await;
    let addr = relay_addrs(&bob, 1).await[0].with_peer_id(bob.peer());
    let alice = node(&network, Config::default()).await;
    let result = tokio::time::timeout(LIMIT, alice.control.dial(addr, DialOptions::default()))
        .await
        .expect("the dial ends");
    assert!(
        matches!(result, Err(DialError::Handshake(_))),
        "a tampered circuit must fail the secure handshake: {result:?}"
    );
    assert!(
        bob.control
            .sessions()
            .iter()
            .all(|s| s.peer != alice.peer())
    );
}
