//! Service-wide and per-session handlers: instances, isolated state,
//! errors, panics and timers.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use common::{Notice, memory_node, next_data, next_event, step};
use shoal::{
    DialOptions, HandlerError, HandlerResult, ProtocolContext, ProtocolContextMut, ProtocolEvent,
    ProtocolId, ProtocolMeta, ServiceError, ServiceProtocol, SessionProtocol,
};
use shoal_transport::MemoryNetwork;

const WIDE: ProtocolId = ProtocolId(1);
const PER: ProtocolId = ProtocolId(2);

/// Service-wide: counts inits; replies with the total frames seen across
/// all sessions; panics on "panic".
struct Wide {
    inits: Arc<AtomicUsize>,
    total: usize,
}

impl ServiceProtocol for Wide {
    fn init(&mut self, _ctx: &mut ProtocolContext) -> HandlerResult {
        self.inits.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn received(&mut self, ctx: &mut ProtocolContextMut<'_>, data: Bytes) -> HandlerResult {
        if data == "panic" {
            panic!("wide handler asked to panic");
        }
        self.total += 1;
        ctx.reply(format!("total {}", self.total))?;
        Ok(())
    }
}

/// Per-session: replies with the frames seen on its own session; fails on
/// "err"; ticks every 10 ms after "tick".
struct Per {
    seen: usize,
    ticks: Arc<AtomicUsize>,
}

impl SessionProtocol for Per {
    fn received(&mut self, ctx: &mut ProtocolContextMut<'_>, data: Bytes) -> HandlerResult {
        match &data[..] {
            b"err" => return Err("asked to fail".into()),
            b"tick" => ctx.set_notify(Duration::from_millis(10), 7)?,
            _ => {}
        }
        self.seen += 1;
        ctx.reply(format!("seen {}", self.seen))?;
        Ok(())
    }
    fn notify(&mut self, ctx: &mut ProtocolContextMut<'_>, token: u64) -> HandlerResult {
        assert_eq!(token, 7);
        self.ticks.fetch_add(1, Ordering::SeqCst);
        let _ = ctx.reply("tick");
        Ok(())
    }
}

struct Setup {
    server: common::Node,
    inits: Arc<AtomicUsize>,
    instances: Arc<AtomicUsize>,
    ticks: Arc<AtomicUsize>,
}

async fn server(network: &MemoryNetwork) -> Setup {
    let inits = Arc::new(AtomicUsize::new(0));
    let instances = Arc::new(AtomicUsize::new(0));
    let ticks = Arc::new(AtomicUsize::new(0));
    let wide = Wide {
        inits: inits.clone(),
        total: 0,
    };
    let (made, t) = (instances.clone(), ticks.clone());
    let server = memory_node(network, true, move |b| {
        b.protocol(ProtocolMeta::builder(WIDE, "/wide").service_handle(wide))
            .protocol(ProtocolMeta::builder(PER, "/per").session_handle(move || {
                made.fetch_add(1, Ordering::SeqCst);
                Per {
                    seen: 0,
                    ticks: t.clone(),
                }
            }))
    })
    .await;
    Setup {
        server,
        inits,
        instances,
        ticks,
    }
}

struct Client {
    node: common::Node,
    wide: shoal::ProtocolEvents,
    per: shoal::ProtocolEvents,
    session: shoal::SessionId,
}

async fn client(network: &MemoryNetwork, setup: &Setup) -> Client {
    let (w, mut wide) = ProtocolMeta::builder(WIDE, "/wide").event_stream();
    let (p, mut per) = ProtocolMeta::builder(PER, "/per").event_stream();
    let node = memory_node(network, false, |b| b.protocol(w).protocol(p)).await;
    let session = node
        .control
        .dial(setup.server.addr.clone().unwrap(), DialOptions::default())
        .await
        .unwrap()
        .id;
    for events in [&mut wide, &mut per] {
        assert!(matches!(
            next_event(events).await,
            ProtocolEvent::Connected { .. }
        ));
    }
    Client {
        node,
        wide,
        per,
        session,
    }
}

#[tokio::test]
async fn service_wide_handler_is_shared_and_per_session_state_is_isolated() {
    let network = MemoryNetwork::new();
    let setup = server(&network).await;
    let mut a = client(&network, &setup).await;
    let mut b = client(&network, &setup).await;
    let mut c = client(&network, &setup).await;

    assert_eq!(setup.inits.load(Ordering::SeqCst), 1);
    assert_eq!(setup.instances.load(Ordering::SeqCst), 3);

    // Per-session: each session counts its own frames.
    for i in 1..=3 {
        a.node.control.send(a.session, PER, "x").await.unwrap();
        assert_eq!(next_data(&mut a.per).await, format!("seen {i}"));
    }
    b.node.control.send(b.session, PER, "x").await.unwrap();
    assert_eq!(next_data(&mut b.per).await, "seen 1");

    // Service-wide: one count across sessions.
    a.node.control.send(a.session, WIDE, "x").await.unwrap();
    assert_eq!(next_data(&mut a.wide).await, "total 1");
    b.node.control.send(b.session, WIDE, "x").await.unwrap();
    assert_eq!(next_data(&mut b.wide).await, "total 2");
    c.node.control.send(c.session, WIDE, "x").await.unwrap();
    assert_eq!(next_data(&mut c.wide).await, "total 3");

    // Closing the protocol on one session drops only that instance's state.
    a.node.control.close_protocol(a.session, PER).unwrap();
    assert!(matches!(
        next_event(&mut a.per).await,
        ProtocolEvent::Disconnected { .. }
    ));
    a.node.control.open_protocol(a.session, PER).await.unwrap();
    assert!(matches!(
        next_event(&mut a.per).await,
        ProtocolEvent::Connected { .. }
    ));
    a.node.control.send(a.session, PER, "x").await.unwrap();
    assert_eq!(next_data(&mut a.per).await, "seen 1");
    assert_eq!(setup.instances.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn handler_error_closes_that_session_protocol_and_panic_disables_the_protocol() {
    let network = MemoryNetwork::new();
    let mut setup = server(&network).await;
    let mut a = client(&network, &setup).await;
    let mut b = client(&network, &setup).await;

    // An error from a per-session instance closes /per on that session only.
    a.node.control.send(a.session, PER, "err").await.unwrap();
    assert!(matches!(
        next_event(&mut a.per).await,
        ProtocolEvent::Disconnected { .. }
    ));
    let a_peer = a.node.control.local_peer_id();
    let notice = setup
        .server
        .wait_for("handler error", |n| {
            matches!(n, Notice::Error(ServiceError::Handler { .. }))
        })
        .await;
    let Notice::Error(ServiceError::Handler {
        protocol,
        peer,
        error,
        ..
    }) = notice
    else {
        unreachable!()
    };
    assert_eq!((protocol, peer), (PER, Some(a_peer)));
    assert!(matches!(error, HandlerError::Returned(_)));
    b.node.control.send(b.session, PER, "x").await.unwrap();
    assert_eq!(next_data(&mut b.per).await, "seen 1");
    a.node.control.send(a.session, WIDE, "x").await.unwrap();
    assert_eq!(next_data(&mut a.wide).await, "total 1");

    // A panic in the service-wide handler is caught; /wide closes everywhere.
    a.node.control.send(a.session, WIDE, "panic").await.unwrap();
    for events in [&mut a.wide, &mut b.wide] {
        assert!(matches!(
            next_event(events).await,
            ProtocolEvent::Disconnected { .. }
        ));
    }
    let notice = setup
        .server
        .wait_for("handler panic", |n| {
            matches!(
                n,
                Notice::Error(ServiceError::Handler {
                    error: HandlerError::Panicked(_),
                    ..
                })
            )
        })
        .await;
    drop(notice);
    // The service goes on: /per still works, /wide is refused from now on.
    b.node.control.send(b.session, PER, "x").await.unwrap();
    assert_eq!(next_data(&mut b.per).await, "seen 2");
    assert!(b.node.control.open_protocol(b.session, WIDE).await.is_err());
}

#[tokio::test]
async fn per_session_timers_fire_and_die_with_the_protocol() {
    let network = MemoryNetwork::new();
    let setup = server(&network).await;
    let mut a = client(&network, &setup).await;
    a.node.control.send(a.session, PER, "tick").await.unwrap();
    assert_eq!(next_data(&mut a.per).await, "seen 1");
    for _ in 0..3 {
        assert_eq!(next_data(&mut a.per).await, "tick");
    }
    a.node.control.close_protocol(a.session, PER).unwrap();
    // Wait for the close to reach the server, then check ticks stop.
    step("disconnect", async {
        loop {
            if let ProtocolEvent::Disconnected { .. } = next_event(&mut a.per).await {
                break;
            }
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = setup.ticks.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(setup.ticks.load(Ordering::SeqCst), before);
}
