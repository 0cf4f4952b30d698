//! Ping over the in-memory transport: RTTs, a silent peer, malformed
//! messages and floods, each beside a good peer whose pings go on.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use shoal::{
    DialOptions, ProtocolEvent, ProtocolEvents, ProtocolId, ProtocolMeta, ServiceBuilder,
    ServiceContext, ServiceControl, ServiceEvent, ServiceHandle, SessionId,
};
use shoal_identity::Keypair;
use shoal_ping::{Config, Event, Handle, PROTOCOL_NAME, PingMessage};
use shoal_transport::{MemoryNetwork, MemoryTransport};
use tokio::sync::mpsc;

const PING: ProtocolId = ProtocolId(1);
/// Upper bound for any one wait.
const STEP: Duration = Duration::from_secs(5);

/// Forwards closed sessions to a channel.
struct Closed(mpsc::Sender<SessionId>);
impl ServiceHandle for Closed {
    fn handle_event(&mut self, _: &mut ServiceContext<'_>, event: ServiceEvent) {
        if let ServiceEvent::SessionClosed { session, .. } = event {
            let _ = self.0.try_send(session.id);
        }
    }
}

struct Node {
    control: ServiceControl,
    closed: mpsc::Receiver<SessionId>,
}

async fn spawn(network: &MemoryNetwork, meta: ProtocolMeta) -> Node {
    let (tx, closed) = mpsc::channel(64);
    let service = ServiceBuilder::new(Keypair::generate())
        .transport(MemoryTransport::new(network))
        .protocol(meta)
        .handle(Closed(tx))
        .build()
        .unwrap();
    let control = service.control();
    tokio::spawn(service);
    control.listen("/memory/0".parse().unwrap()).await.unwrap();
    Node { control, closed }
}

struct Pinger {
    node: Node,
    handle: Handle,
    events: mpsc::Receiver<Event>,
}

async fn pinger(network: &MemoryNetwork, config: Config) -> Pinger {
    let (meta, handle, events) = shoal_ping::new(PING, config);
    Pinger {
        node: spawn(network, meta).await,
        handle,
        events,
    }
}

/// A hand-made peer speaking `/shoal/ping` through an event stream.
async fn raw_peer(network: &MemoryNetwork) -> (Node, ProtocolEvents) {
    let (meta, events) = ProtocolMeta::builder(PING, PROTOCOL_NAME).event_stream();
    (spawn(network, meta).await, events)
}

fn fast() -> Config {
    Config {
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(300),
        ..Config::default()
    }
}

async fn connect(from: &Node, to: &Node) -> SessionId {
    let addr = to.control.listen_addrs().pop().unwrap();
    from.control
        .dial(addr, DialOptions::default())
        .await
        .unwrap()
        .id
}

/// Waits (bounded) for an event matching `pred`.
async fn wait_event(events: &mut mpsc::Receiver<Event>, pred: impl Fn(&Event) -> bool) -> Event {
    tokio::time::timeout(STEP, async {
        loop {
            let e = events.recv().await.unwrap();
            if pred(&e) {
                return e;
            }
        }
    })
    .await
    .expect("timed out waiting for a ping event")
}

/// `n` pongs from `peer` arrive.
async fn pongs_from(p: &mut Pinger, peer: shoal::PeerId, n: usize) {
    for _ in 0..n {
        wait_event(
            &mut p.events,
            |e| matches!(e, Event::Pong { peer: q, .. } if *q == peer),
        )
        .await;
    }
}

async fn next_protocol_event(events: &mut ProtocolEvents) -> ProtocolEvent {
    tokio::time::timeout(STEP, events.recv())
        .await
        .expect("timed out waiting for a protocol event")
        .unwrap()
}

#[tokio::test]
async fn rtt_is_reported_on_both_sides() {
    let network = MemoryNetwork::new();
    let mut a = pinger(&network, fast()).await;
    let mut b = pinger(&network, fast()).await;
    let session = connect(&a.node, &b.node).await;
    let b_id = b.node.control.local_peer_id();
    let a_id = a.node.control.local_peer_id();
    let Event::Pong {
        rtt, session: s, ..
    } = wait_event(
        &mut a.events,
        |e| matches!(e, Event::Pong { peer, .. } if *peer == b_id),
    )
    .await
    else {
        unreachable!()
    };
    assert_eq!(s, session);
    assert!(rtt < STEP);
    pongs_from(&mut b, a_id, 3).await;
    assert!(a.handle.rtt(session).is_some());
    assert_eq!(a.handle.rtts().len(), 1);
    assert_eq!(a.handle.dropped_events(), 0);
}

#[tokio::test]
async fn a_silent_peer_is_timed_out_and_its_session_closed_while_a_good_peer_goes_on() {
    let network = MemoryNetwork::new();
    let mut a = pinger(&network, fast()).await;
    let mut good = pinger(&network, fast()).await;
    let (silent, mut silent_events) = raw_peer(&network).await;
    connect(&good.node, &a.node).await;
    let silent_session = connect(&a.node, &silent).await;

    // The silent peer reads pings (so they are not backpressured) and never
    // answers.
    let drain = tokio::spawn(async move {
        while let Some(e) = silent_events.recv().await {
            if let ProtocolEvent::Received { data, .. } = e {
                assert!(matches!(
                    PingMessage::decode(&data),
                    Ok(PingMessage::Ping(_))
                ));
            }
        }
    });

    let silent_id = silent.control.local_peer_id();
    let event = wait_event(&mut a.events, |e| matches!(e, Event::Timeout { .. })).await;
    assert_eq!(
        event,
        Event::Timeout {
            peer: silent_id,
            session: silent_session,
            timeout: fast().timeout
        }
    );
    let closed = tokio::time::timeout(STEP, a.node.closed.recv()).await;
    assert_eq!(closed.unwrap(), Some(silent_session));
    assert!(a.handle.rtt(silent_session).is_none());

    // The good peer's session stays and its pings continue.
    let a_id = a.node.control.local_peer_id();
    let good_id = good.node.control.local_peer_id();
    pongs_from(&mut good, a_id, 3).await;
    pongs_from(&mut a, good_id, 3).await;
    assert_eq!(a.node.control.sessions().len(), 1);
    drain.abort();
}

#[tokio::test]
async fn garbage_closes_only_that_ping_substream_and_stray_pongs_never_disconnect() {
    let network = MemoryNetwork::new();
    // A long timeout: the raw peer never answers, and that is not under test.
    let config = Config {
        timeout: Duration::from_secs(30),
        ..fast()
    };
    let mut a = pinger(&network, config).await;
    let mut good = pinger(&network, fast()).await;
    let (bad, mut bad_events) = raw_peer(&network).await;
    connect(&good.node, &a.node).await;
    let session = connect(&bad, &a.node).await;
    assert!(matches!(
        next_protocol_event(&mut bad_events).await,
        ProtocolEvent::Connected { .. }
    ));

    // Pongs nobody asked for are ignored: the substream stays open.
    for nonce in [0, 7, u64::MAX] {
        bad.control
            .send(session, PING, PingMessage::Pong(nonce).encode())
            .await
            .unwrap();
    }
    // A ping is still answered afterwards.
    bad.control
        .send(session, PING, PingMessage::Ping(42).encode())
        .await
        .unwrap();
    tokio::time::timeout(STEP, async {
        loop {
            if let ProtocolEvent::Received { data, .. } = next_protocol_event(&mut bad_events).await
                && PingMessage::decode(&data) == Ok(PingMessage::Pong(42))
            {
                break;
            }
        }
    })
    .await
    .unwrap();

    // Garbage: A closes the ping substream of this session only.
    bad.control
        .send(session, PING, vec![0xff, 0xff, 0xff])
        .await
        .unwrap();
    tokio::time::timeout(STEP, async {
        while !matches!(
            next_protocol_event(&mut bad_events).await,
            ProtocolEvent::Disconnected { .. }
        ) {}
    })
    .await
    .unwrap();
    // The session itself is still up, and the good peer's pings go on.
    assert!(bad.control.session(session).is_some());
    let a_id = a.node.control.local_peer_id();
    pongs_from(&mut good, a_id, 3).await;
    pongs_from(&mut a, good.node.control.local_peer_id(), 3).await;
}

#[tokio::test]
async fn a_ping_flood_is_answered_at_the_limit_then_closed() {
    let network = MemoryNetwork::new();
    let config = Config {
        interval: Duration::from_secs(30),
        timeout: Duration::from_secs(30),
        max_pings_per_interval: 2,
        ..Config::default()
    };
    let a = pinger(&network, config).await;
    let (bad, mut bad_events) = raw_peer(&network).await;
    let session = connect(&bad, &a.node).await;
    let limit = 2 * shoal_ping::ABUSE_FACTOR as u64;
    for nonce in 0..=limit {
        bad.control
            .send(session, PING, PingMessage::Ping(nonce).encode())
            .await
            .unwrap();
    }
    let mut pongs = 0;
    tokio::time::timeout(STEP, async {
        loop {
            match next_protocol_event(&mut bad_events).await {
                ProtocolEvent::Received { data, .. } => {
                    if let Ok(PingMessage::Pong(_)) = PingMessage::decode(&data) {
                        pongs += 1;
                    }
                }
                ProtocolEvent::Disconnected { .. } => break,
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(pongs, 2, "only the allowed pings are answered");
}
