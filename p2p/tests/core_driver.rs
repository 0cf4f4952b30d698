//! The generic core driver on a real service, in paused tokio time: a core
//! without a deadline is never woken while messages flow through it, a
//! core with one is woken at it and only then, and handlers get one-shot
//! timers and the registered protocol names.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal::{
    BoxError, Bytes, Core, CoreDriver, CoreHandle, HandlerResult, Now, PeerId, ProtocolContext,
    ProtocolId, ProtocolMeta, Remote, ServiceBuilder, ServiceControl, ServiceProtocol, Transmit,
    address_book::AddressSource, config::Config,
};
use shoal_identity::Keypair;
use shoal_transport::{MemoryNetwork, MemoryTransport};

const ECHO: ProtocolId = ProtocolId(1);
const TICKS: ProtocolId = ProtocolId(2);

/// Echoes frames that start with 0 (as 1 + rest); counts the 1s; answers
/// a 2 only when the event it raised is polled (a core acting on its own
/// events); may want a tick every `period`.
struct Echo {
    out: Vec<Transmit>,
    /// Raised by a 2: answered as it is polled.
    raised: Option<PeerId>,
    echoes: u32,
    period: Option<Duration>,
    next_tick: Option<Instant>,
    ticks: u32,
}

impl Echo {
    fn new(period: Option<Duration>) -> Echo {
        Echo {
            out: Vec::new(),
            raised: None,
            echoes: 0,
            period,
            next_tick: None,
            ticks: 0,
        }
    }

    fn send(&mut self, now: Now, peer: PeerId, bytes: Bytes) {
        if let Some(period) = self.period {
            self.next_tick.get_or_insert(now.instant + period);
        }
        self.out.push(Transmit { peer, bytes });
    }
}

impl Core for Echo {
    type Event = ();

    fn handle_message(&mut self, now: Now, from: &Remote, bytes: &[u8]) -> Result<(), BoxError> {
        match bytes.first() {
            Some(0) => {
                let mut reply = bytes.to_vec();
                reply[0] = 1;
                self.send(now, from.peer, reply.into());
            }
            Some(1) => self.echoes += 1,
            Some(2) => self.raised = Some(from.peer),
            _ => return Err("unknown frame".into()),
        }
        Ok(())
    }

    fn handle_timeout(&mut self, now: Now) {
        if let (Some(period), Some(due)) = (self.period, self.next_tick)
            && due <= now.instant
        {
            self.ticks += 1;
            self.next_tick = Some(due + period);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_tick
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop()
    }

    fn poll_event(&mut self) -> Option<()> {
        let peer = self.raised.take()?;
        self.out.push(Transmit {
            peer,
            bytes: vec![1].into(),
        });
        Some(())
    }
}

/// Counts one-shot wake-ups and keeps the protocol names it saw.
#[derive(Clone, Default)]
struct Waker(Arc<Mutex<(u32, Vec<String>)>>);

impl ServiceProtocol for Waker {
    fn init(&mut self, ctx: &mut ProtocolContext) -> HandlerResult {
        let names = ctx.protocol_names().into_iter().map(|(_, n)| n).collect();
        self.0.lock().unwrap().1 = names;
        ctx.wake_at(tokio::time::Instant::now() + Duration::from_secs(30), 7)?;
        Ok(())
    }

    fn notify(&mut self, _ctx: &mut ProtocolContext, token: u64) -> HandlerResult {
        assert_eq!(token, 7);
        self.0.lock().unwrap().0 += 1;
        Ok(())
    }
}

async fn node(
    network: &MemoryNetwork,
    period: Option<Duration>,
) -> (ServiceControl, CoreHandle<Echo>, Waker) {
    let (driver, handle) = CoreDriver::new(Echo::new(period), |()| {});
    let waker = Waker::default();
    let config = Config {
        idle_timeout: Duration::from_secs(3600),
        ..Config::default()
    };
    let service = ServiceBuilder::new(Keypair::generate())
        .transport(MemoryTransport::new(network))
        .config(config)
        .protocol(ProtocolMeta::builder(ECHO, "/echo").service_handle(driver))
        .protocol(ProtocolMeta::builder(TICKS, "/ticks").service_handle(waker.clone()))
        .build()
        .unwrap();
    let control = service.control();
    tokio::spawn(service);
    control.listen("/memory/0".parse().unwrap()).await.unwrap();
    (control, handle, waker)
}

#[tokio::test(start_paused = true)]
async fn a_core_without_a_deadline_is_never_woken() {
    let network = MemoryNetwork::new();
    let (a, a_core, waker) = node(&network, None).await;
    let (b, b_core, _) = node(&network, None).await;
    let b_id = b.local_peer_id();
    a.add_addresses(b_id, &b.listen_addrs(), AddressSource::Application);
    // Ten requests to b by peer id: the driver has it dialled. One more
    // that b answers only as it polls the event it raised: the answer goes
    // out in the same flush, not at some later call.
    for i in 0..10u8 {
        a_core.with(|core, now| core.send(now, b_id, vec![0, i].into()));
    }
    a_core.with(|core, now| core.send(now, b_id, vec![2].into()));
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(a_core.read(|c| c.echoes), 11);
    assert!(a_core.is_connected(&b_id));
    assert_eq!(a_core.dropped_transmits(), 0);
    assert_eq!(a_core.timer_wakeups(), 0, "no deadline, no wake-up");
    assert_eq!(b_core.timer_wakeups(), 0);
    // The one-shot timer fired once, and the names were there at init.
    let (fired, names) = waker.0.lock().unwrap().clone();
    assert_eq!(fired, 1);
    assert_eq!(names, ["/echo", "/ticks"]);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_core_is_woken_at_its_deadline() {
    let network = MemoryNetwork::new();
    let (a, a_core, _) = node(&network, Some(Duration::from_secs(10))).await;
    let (b, _b_core, _) = node(&network, None).await;
    let b_id = b.local_peer_id();
    a.add_addresses(b_id, &b.listen_addrs(), AddressSource::Application);
    a_core.with(|core, now| core.send(now, b_id, vec![0].into()));
    tokio::time::sleep(Duration::from_secs(60) + Duration::from_millis(500)).await;
    assert_eq!(a_core.read(|c| c.ticks), 6);
    // Six fires and the first arming: nothing else woke the timer.
    assert!(a_core.timer_wakeups() <= 7, "{}", a_core.timer_wakeups());
    a.shutdown().await;
    b.shutdown().await;
}
