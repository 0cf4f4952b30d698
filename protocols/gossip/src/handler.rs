//! The gossip core as a [`shoal::Core`], so the service's one
//! [`CoreDriver`](shoal::CoreDriver) runs it (sessions, sending, the
//! heartbeat timer). The driver runs it
//! [`connected_only`](shoal::CoreDriver::connected_only): a mesh talks only
//! to peers it is connected to, and a frame that finds a session's queue
//! full is dropped and counted (gossip recovers it through IHAVE and
//! IWANT). A peer dropped for misbehaviour has its stream closed
//! ([`Core::poll_close`]).

use std::time::Instant;

use shoal::{BoxError, Core, Now, PeerId, Remote, Transmit};

use crate::{Error, Event, Gossip};

impl Core for Gossip {
    type Event = Event;

    fn peer_connected(&mut self, now: Now, remote: &Remote) {
        Gossip::peer_connected(self, now.instant, remote.peer);
    }

    fn peer_disconnected(&mut self, now: Now, peer: PeerId) {
        Gossip::peer_disconnected(self, now.instant, peer);
    }

    fn handle_message(&mut self, now: Now, from: &Remote, bytes: &[u8]) -> Result<(), BoxError> {
        match Gossip::handle_message(self, now.instant, from.peer, bytes) {
            Ok(()) => Ok(()),
            // Dropped for misbehaviour: its stream is being closed.
            Err(Error::UnknownPeer(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn handle_timeout(&mut self, now: Now) {
        Gossip::handle_timeout(self, now.instant);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Gossip::poll_timeout(self)
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = Gossip::poll_transmit(self)?;
        Some(Transmit {
            peer: t.peer,
            bytes: t.frame,
        })
    }

    fn poll_event(&mut self) -> Option<Event> {
        Gossip::poll_event(self)
    }

    fn poll_close(&mut self) -> Option<PeerId> {
        Gossip::poll_close(self)
    }
}
