//! One session per pair of peers: crossed dials, repeated dials and dials
//! to a connected peer all end with exactly one session on each end, and
//! both ends keep the same connection.

#![allow(clippy::unwrap_used)]

mod common;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Node, Recorder, STEP, memory_node};
use shoal::{DialError, DialOptions, Direction, ServiceBuilder, ServiceControl, SessionInfo};
use shoal_identity::{Keypair, PeerId};
use shoal_transport::{MemoryNetwork, MemoryTransport, Multiaddr, Transport, TransportError};

/// The in-memory transport, counting the dials that reach it: a dial the
/// service answers with an existing session never does.
struct Counting {
    inner: MemoryTransport,
    dials: Arc<AtomicUsize>,
}

impl Transport for Counting {
    type Connection = <MemoryTransport as Transport>::Connection;
    type Listener = <MemoryTransport as Transport>::Listener;

    fn supports(&self, addr: &Multiaddr) -> bool {
        self.inner.supports(addr)
    }

    fn listen(
        &self,
        addr: &Multiaddr,
    ) -> impl Future<Output = Result<Self::Listener, TransportError>> + Send {
        self.inner.listen(addr)
    }

    fn dial(
        &self,
        addr: &Multiaddr,
    ) -> impl Future<Output = Result<Self::Connection, TransportError>> + Send {
        self.dials.fetch_add(1, Ordering::SeqCst);
        self.inner.dial(addr)
    }
}

/// A listening node on `network` whose transport counts into `dials`.
async fn counting_node(network: &MemoryNetwork, dials: &Arc<AtomicUsize>) -> Node {
    let (tx, notices) = tokio::sync::mpsc::channel(4096);
    let service = ServiceBuilder::new(Keypair::generate())
        .transport(Counting {
            inner: MemoryTransport::new(network),
            dials: dials.clone(),
        })
        .handle(Recorder(tx))
        .build()
        .unwrap();
    let control = service.control();
    tokio::spawn(service);
    let addr = Some(control.listen("/memory/0".parse().unwrap()).await.unwrap());
    Node {
        control,
        notices,
        addr,
    }
}

/// The sessions `control` has with `peer`.
fn sessions_with(control: &ServiceControl, peer: PeerId) -> Vec<std::sync::Arc<SessionInfo>> {
    control
        .sessions()
        .into_iter()
        .filter(|s| s.peer == peer)
        .collect()
}

/// Waits (bounded) until each of `a` and `b` has exactly one session with
/// the other and both are the same connection (one end's outbound is the
/// other's inbound), and returns their directions. Handshakes end a moment
/// apart on the two ends, so this is a state reached, not a snapshot.
async fn settled(a: &Node, b: &Node) -> (Direction, Direction) {
    let (pa, pb) = (a.control.local_peer_id(), b.control.local_peer_id());
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let (sa, sb) = (sessions_with(&a.control, pb), sessions_with(&b.control, pa));
        if sa.len() == 1 && sb.len() == 1 && sa[0].direction != sb[0].direction {
            return (sa[0].direction, sb[0].direction);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not settled: {} and {} sessions",
            sa.len(),
            sb.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossed_dials_keep_the_same_one_connection_on_both_ends() {
    let network = MemoryNetwork::new();
    // A loser that was in use drains for 2 s: a few rounds suffice.
    let mut crossed = 0;
    for _ in 0..4 {
        let dials = Arc::new(AtomicUsize::new(0));
        let a = counting_node(&network, &dials).await;
        let b = counting_node(&network, &dials).await;
        let (pa, pb) = (a.control.local_peer_id(), b.control.local_peer_id());
        let (ra, rb) = tokio::join!(
            a.control
                .dial(b.addr.clone().unwrap(), DialOptions::default().expect(pb)),
            b.control
                .dial(a.addr.clone().unwrap(), DialOptions::default().expect(pa)),
        );
        assert_eq!(ra.unwrap().peer, pb);
        assert_eq!(rb.unwrap().peer, pa);
        let (da, _) = settled(&a, &b).await;
        // When both dials connected, the survivor is the one dialled by the
        // smaller peer id. (Rarely one dial finishes before the other
        // starts; the second then returns the session without connecting,
        // and there was nothing to choose between.)
        if dials.load(Ordering::SeqCst) == 2 {
            crossed += 1;
            let a_dialled = da == Direction::Outbound;
            assert_eq!(a_dialled, pa.as_bytes() < pb.as_bytes());
        }
        a.control.shutdown().await;
        b.control.shutdown().await;
    }
    assert!(crossed > 0, "the dials never crossed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_dials_end_with_one_session() {
    let network = MemoryNetwork::new();
    for with_peer_id in [true, false] {
        let a = memory_node(&network, false, |b| b).await;
        let b = memory_node(&network, true, |b| b).await;
        let pb = b.control.local_peer_id();
        let addr = b.addr.clone().unwrap();
        let addr = if with_peer_id {
            addr.with_peer_id(pb)
        } else {
            addr
        };
        let dials = (0..10).map(|_| a.control.dial(addr.clone(), DialOptions::default()));
        let results = futures::future::join_all(dials).await;
        let ids: Vec<_> = results.into_iter().map(|r| r.unwrap().id).collect();
        settled(&a, &b).await;
        let kept = sessions_with(&a.control, pb)[0].id;
        assert!(
            ids.iter().all(|id| *id == kept),
            "every dial returns the surviving session: {ids:?} vs {kept:?}"
        );
        a.control.shutdown().await;
        b.control.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialling_a_connected_peer_reuses_its_session() {
    let network = MemoryNetwork::new();
    let a = memory_node(&network, false, |b| b).await;
    let mut b = memory_node(&network, true, |b| b).await;
    let pb = b.control.local_peer_id();
    let addr = b.addr.clone().unwrap().with_peer_id(pb);
    let first = a
        .control
        .dial(addr.clone(), DialOptions::default())
        .await
        .unwrap();
    b.wait_for("the session", |n| {
        matches!(
            n,
            common::Notice::Event(shoal::ServiceEvent::SessionOpened { .. })
        )
    })
    .await;
    let again = a
        .control
        .dial(addr.clone(), DialOptions::default())
        .await
        .unwrap();
    assert_eq!(again.id, first.id);
    // Known from the options rather than the address, too.
    let by_opts = a
        .control
        .dial(b.addr.clone().unwrap(), DialOptions::default().expect(pb))
        .await
        .unwrap();
    assert_eq!(by_opts.id, first.id);
    assert!(matches!(
        a.control.try_dial(addr, DialOptions::default()),
        Err(DialError::AlreadyConnected(id)) if id == first.id
    ));
    // No second connection reached b.
    tokio::time::sleep(Duration::from_millis(50)).await;
    while let Ok(n) = b.notices.try_recv() {
        assert!(
            !matches!(
                n,
                common::Notice::Event(shoal::ServiceEvent::SessionOpened { .. })
            ),
            "a second session opened: {n:?}"
        );
    }
    assert_eq!(
        sessions_with(&b.control, a.control.local_peer_id()).len(),
        1
    );
}
