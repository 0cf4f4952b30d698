//! The Kademlia core as a [`shoal::Core`], so the service's one
//! [`CoreDriver`](shoal::CoreDriver) runs it: sessions, sending by peer id
//! (the service dials peers from its address book), dial failures and the
//! timer all live there. What is left here is translation.
//!
//! Addresses: the addresses a request carries (from the routing table or
//! a lookup's answers) go to the address book before the request is sent
//! ([`Core::poll_addresses`]), so the service can dial the peer. A
//! connection we dialled tells the core where the peer listens; an
//! inbound one does not (its port is the peer's own), and the connection's
//! address decides which addresses of an answer are kept
//! ([`Config::address_scope`](crate::Config::address_scope)).

use std::time::Instant;

use shoal::{BoxError, Core, Multiaddr, Now, PeerId, Remote, Transmit};

use crate::{Event, Kademlia};

impl Core for Kademlia {
    type Event = Event;

    fn peer_connected(&mut self, now: Now, remote: &Remote) {
        let addrs = remote.dialable_addr().cloned().into_iter().collect();
        Kademlia::peer_connected(self, now.instant, remote.peer, addrs);
    }

    fn peer_disconnected(&mut self, now: Now, peer: PeerId) {
        Kademlia::peer_disconnected(self, now.instant, peer);
    }

    fn handle_message(&mut self, now: Now, from: &Remote, bytes: &[u8]) -> Result<(), BoxError> {
        let addrs: Vec<Multiaddr> = from.dialable_addr().cloned().into_iter().collect();
        let (instant, unix) = (now.instant, now.unix_secs());
        self.handle_message_via(instant, unix, from.peer, &addrs, Some(&from.addr), bytes)
            .map_err(Into::into)
    }

    fn handle_timeout(&mut self, now: Now) {
        Kademlia::handle_timeout(self, now.instant, now.unix_secs());
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Kademlia::poll_timeout(self)
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = Kademlia::poll_transmit(self)?;
        Some(Transmit {
            peer: t.to,
            bytes: t.bytes,
        })
    }

    fn poll_event(&mut self) -> Option<Event> {
        Kademlia::poll_event(self)
    }

    fn dial_failed(&mut self, now: Now, peer: PeerId) {
        Kademlia::dial_failed(self, now.instant, peer);
    }

    fn poll_addresses(&mut self) -> Option<(PeerId, Vec<Multiaddr>)> {
        self.take_transmit_addrs()
    }
}
