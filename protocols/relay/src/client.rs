//! The client's side: reservations kept on relays, and circuits accepted
//! from them.
//!
//! ```text
//!  keeper: while fewer than `reservations` are held, pick the next relay
//!    not tried within `retry_interval` ─▶ dial it ─▶ hop stream ─▶ Reserve
//!    held: renew at 3/4 of the lifetime on the same stream; the stream's
//!    end (the relay died, the session closed) ─▶ lost ─▶ pick another;
//!    reservations no longer wanted (the node is reachable) ─▶ released
//!    every change ─▶ the relay addresses (watch, and the service's
//!    announced addresses)
//!  stop streams: only from relays holding our reservation ─▶ Incoming ─▶
//!    Status ─▶ the stream goes to the circuit listener as a connection
//! ```

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use shoal::{DialOptions, ProtocolId, RawStream, RawStreams, ServiceControl};
use shoal_identity::PeerId;
use shoal_transport::{Inbound, Multiaddr, Protocol};
use tokio::{
    io::{AsyncWriteExt, ReadHalf, WriteHalf},
    sync::{Notify, watch},
    time::Instant,
};

use crate::{
    protocol::{HopMessage, Status, StatusCode, StopMessage},
    transport::{Shared, circuit_listen_addr},
};

/// Relays a client remembers as candidates; more are ignored.
pub const MAX_RELAY_CANDIDATES: usize = 32;

/// How often the keeper looks again even without a change (a relay that
/// failed may be tried again by then).
const KEEPER_TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Candidate {
    /// Not in use; may be tried from this instant on.
    Idle(Instant),
    /// Being dialled and asked.
    Reserving,
    /// Holding our reservation.
    Held,
}

#[derive(Debug)]
struct Relays {
    /// Relay peer → its address (with `/p2p/`) and state.
    candidates: BTreeMap<PeerId, (Multiaddr, Candidate)>,
    /// Candidates in the order they were added: the first are tried first.
    order: Vec<PeerId>,
}

/// The client's state, shared by the keeper, the stop side and the handle.
#[derive(Debug)]
pub(crate) struct Client {
    relays: Mutex<Relays>,
    changed: Notify,
    addrs: watch::Sender<Vec<Multiaddr>>,
    /// Whether reservations are wanted: false releases those held.
    wanted: watch::Sender<bool>,
    control: ServiceControl,
    hop: ProtocolId,
    reservations: usize,
    retry_interval: Duration,
    request_timeout: Duration,
}

impl Client {
    fn relays(&self) -> std::sync::MutexGuard<'_, Relays> {
        self.relays.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a relay candidate (an address ending in the relay's `/p2p/`).
    pub(crate) fn add_relay(&self, addr: Multiaddr) -> bool {
        let Some(peer) = addr.peer_id() else {
            return false;
        };
        if addr.is_relayed() || peer == self.control.local_peer_id() {
            return false;
        }
        let mut relays = self.relays();
        if relays.candidates.contains_key(&peer) {
            return true;
        }
        if relays.candidates.len() >= MAX_RELAY_CANDIDATES {
            return false;
        }
        relays
            .candidates
            .insert(peer, (addr, Candidate::Idle(Instant::now())));
        relays.order.push(peer);
        drop(relays);
        self.changed.notify_one();
        true
    }

    /// Relays holding our reservation.
    pub(crate) fn reserved(&self) -> Vec<PeerId> {
        let relays = self.relays();
        relays
            .order
            .iter()
            .filter(|p| matches!(relays.candidates.get(p), Some((_, Candidate::Held))))
            .copied()
            .collect()
    }

    pub(crate) fn addrs(&self) -> watch::Receiver<Vec<Multiaddr>> {
        self.addrs.subscribe()
    }

    /// Holds reservations (`true`), or releases them and makes none.
    pub(crate) fn set_wanted(&self, wanted: bool) {
        if self.wanted.send_replace(wanted) != wanted {
            tracing::debug!(wanted, "relay reservations wanted");
            self.changed.notify_one();
        }
    }

    fn relay_addr(&self, relay: &PeerId) -> Option<Multiaddr> {
        self.relays()
            .candidates
            .get(relay)
            .filter(|(_, state)| *state == Candidate::Held)
            .map(|(addr, _)| addr.clone())
    }

    fn set_state(&self, relay: PeerId, state: Candidate) {
        let addrs = {
            let mut relays = self.relays();
            if let Some(entry) = relays.candidates.get_mut(&relay) {
                entry.1 = state;
            }
            relays
                .order
                .iter()
                .filter_map(|p| relays.candidates.get(p))
                .filter(|(_, s)| *s == Candidate::Held)
                .map(|(addr, _)| addr.clone().with(Protocol::P2pCircuit))
                .collect::<Vec<_>>()
        };
        // The service announces them before anyone watching hears of them.
        let previous = self.addrs.borrow().clone();
        if previous != addrs {
            for gone in previous.iter().filter(|a| !addrs.contains(a)) {
                self.control.remove_external_address(gone);
            }
            for new in addrs.iter().filter(|a| !previous.contains(a)) {
                let _ = self.control.add_external_address(new.clone());
            }
            self.addrs.send_replace(addrs);
        }
        self.changed.notify_one();
    }

    /// Relays to start reserving on now.
    fn due(&self) -> Vec<(PeerId, Multiaddr)> {
        if !*self.wanted.borrow() {
            return Vec::new();
        }
        let now = Instant::now();
        let mut relays = self.relays();
        let busy = relays
            .candidates
            .values()
            .filter(|(_, s)| !matches!(s, Candidate::Idle(_)))
            .count();
        let mut out = Vec::new();
        for peer in relays.order.clone() {
            if busy + out.len() >= self.reservations {
                break;
            }
            if let Some((addr, state)) = relays.candidates.get_mut(&peer)
                && matches!(*state, Candidate::Idle(at) if at <= now)
            {
                *state = Candidate::Reserving;
                out.push((peer, addr.clone()));
            }
        }
        out
    }
}

/// Starts the keeper and the stop side.
pub(crate) fn spawn(
    shared: &Arc<Shared>,
    control: ServiceControl,
    stop_streams: RawStreams,
    relays: Vec<Multiaddr>,
    reservations: usize,
    retry_interval: Duration,
) -> Arc<Client> {
    let (addrs, _) = watch::channel(Vec::new());
    let client = Arc::new(Client {
        relays: Mutex::new(Relays {
            candidates: BTreeMap::new(),
            order: Vec::new(),
        }),
        changed: Notify::new(),
        addrs,
        wanted: watch::channel(true).0,
        control,
        hop: shared.hop,
        reservations,
        retry_interval,
        request_timeout: shared.dial_timeout,
    });
    for relay in relays {
        client.add_relay(relay);
    }
    tokio::spawn(keep(client.clone()));
    tokio::spawn(accept_circuits(
        client.clone(),
        shared.clone(),
        stop_streams,
    ));
    client
}

async fn keep(client: Arc<Client>) {
    let stopped = client.control.clone();
    loop {
        for (relay, addr) in client.due() {
            tokio::spawn(hold(client.clone(), relay, addr));
        }
        if stopped.is_stopped() {
            return;
        }
        let _ = tokio::time::timeout(KEEPER_TICK, client.changed.notified()).await;
    }
}

async fn read_owned(
    mut r: ReadHalf<RawStream>,
) -> (
    ReadHalf<RawStream>,
    Result<HopMessage, crate::protocol::DecodeError>,
) {
    let message = HopMessage::read(&mut r).await;
    (r, message)
}

/// Dials `relay`, reserves, and keeps the reservation until it is lost.
async fn hold(client: Arc<Client>, relay: PeerId, addr: Multiaddr) {
    let first = tokio::time::timeout(client.request_timeout, async {
        let session = client
            .control
            .dial(addr.clone(), DialOptions::default())
            .await
            .ok()?;
        let mut stream = client
            .control
            .open_raw_stream(session.id, client.hop)
            .await
            .ok()?;
        HopMessage::Reserve.write(&mut stream).await.ok()?;
        match HopMessage::read(&mut stream).await {
            Ok(HopMessage::Status(s)) if s.code == StatusCode::Ok => Some((stream, s)),
            other => {
                tracing::debug!(%relay, ?other, "reservation refused");
                None
            }
        }
    })
    .await
    .ok()
    .flatten();
    let Some((stream, status)) = first else {
        client.set_state(
            relay,
            Candidate::Idle(Instant::now() + client.retry_interval),
        );
        return;
    };
    tracing::debug!(%relay, ttl = status.ttl_secs, "reservation held");
    client.set_state(relay, Candidate::Held);
    let (r, mut w) = tokio::io::split(stream);
    renew_until_lost(&client, r, &mut w, status).await;
    tracing::debug!(%relay, "reservation lost");
    let _ = w.shutdown().await;
    client.set_state(
        relay,
        Candidate::Idle(Instant::now() + client.retry_interval),
    );
}

/// Renews at 3/4 of each lifetime; returns when the stream ends, the
/// relay refuses a renewal, or reservations are no longer wanted (closing
/// the stream then releases the reservation).
async fn renew_until_lost(
    client: &Client,
    r: ReadHalf<RawStream>,
    w: &mut WriteHalf<RawStream>,
    mut status: Status,
) {
    let renew_in = |s: &Status| Duration::from_secs(u64::from(s.ttl_secs.max(4)) * 3 / 4);
    let mut renew_at = Instant::now() + renew_in(&status);
    let mut awaiting = false;
    let mut read = Box::pin(read_owned(r));
    let mut wanted = client.wanted.subscribe();
    loop {
        tokio::select! {
            () = async { drop(wanted.wait_for(|w| !*w).await) } => return,
            (r, message) = &mut read => {
                match message {
                    Ok(HopMessage::Status(s)) if awaiting && s.code == StatusCode::Ok => {
                        status = s;
                        awaiting = false;
                        renew_at = Instant::now() + renew_in(&status);
                    }
                    _ => return,
                }
                read = Box::pin(read_owned(r));
            }
            () = tokio::time::sleep_until(renew_at) => {
                if awaiting || HopMessage::Reserve.write(w).await.is_err() {
                    return;
                }
                awaiting = true;
                // The answer must come within the request timeout.
                renew_at = Instant::now() + client.request_timeout;
            }
        }
        if client.control.is_stopped() {
            return;
        }
    }
}

/// Accepts stop streams from relays holding our reservation and hands
/// their circuits to the listener.
async fn accept_circuits(client: Arc<Client>, shared: Arc<Shared>, mut streams: RawStreams) {
    while let Some(stream) = streams.accept().await {
        let client = client.clone();
        let shared = shared.clone();
        tokio::spawn(async move { accept_one(&client, &shared, stream).await });
    }
}

async fn accept_one(client: &Client, shared: &Shared, mut stream: RawStream) {
    let relay = stream.session().peer;
    let Some(relay_addr) = client.relay_addr(&relay) else {
        let denied = StopMessage::Status(Status::new(StatusCode::PermissionDenied));
        let _ = denied.write(&mut stream).await;
        return;
    };
    let incoming =
        tokio::time::timeout(client.request_timeout, StopMessage::read(&mut stream)).await;
    let Ok(Ok(StopMessage::Incoming { peer, .. })) = incoming else {
        return;
    };
    let Ok(permit) = shared.inbound_tx.clone().try_reserve_owned() else {
        let busy = StopMessage::Status(Status::new(StatusCode::ResourceLimit));
        let _ = busy.write(&mut stream).await;
        return;
    };
    if StopMessage::Status(Status::new(StatusCode::Ok))
        .write(&mut stream)
        .await
        .is_err()
    {
        return;
    }
    tracing::debug!(%relay, %peer, "circuit accepted");
    permit.send(Inbound {
        connection: stream,
        remote_addr: relay_addr.with(Protocol::P2pCircuit),
        local_addr: circuit_listen_addr(),
    });
}
