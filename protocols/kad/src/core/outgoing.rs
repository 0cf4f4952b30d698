//! What the core sends and reports: requests (with their deadline and a
//! copy for the retry), answers, unsolicited stores, and events, each into
//! its bounded queue.

use std::time::Instant;

use bytes::Bytes;
use shoal_identity::PeerId;
use shoal_transport::Multiaddr;

use super::{Kademlia, Pending, PendingKind, Transmit};
use crate::{
    protocol::{Body, Message},
    query::Event,
};

impl Kademlia {
    /// Sends a request and waits for its answer until the request timeout.
    pub(crate) fn send_request(
        &mut self,
        now: Instant,
        to: &PeerId,
        addrs: Vec<Multiaddr>,
        body: Body,
        kind: PendingKind,
    ) {
        let id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1);
        let deadline = now + self.config.request_timeout;
        let kind_is_lookup = matches!(kind, PendingKind::Lookup { .. });
        let bytes = self.encode_request(Message {
            request_id: id,
            body,
        });
        let transmit = Transmit {
            to: *to,
            addrs,
            bytes,
        };
        self.pending.insert(
            id,
            Pending {
                peer: *to,
                deadline,
                kind,
                attempts: 1,
                retry: transmit.clone(),
            },
        );
        self.deadlines.insert((deadline, id));
        if kind_is_lookup {
            self.stalls.insert((now + self.config.stall_timeout, id));
        }
        self.push_transmit(transmit);
    }

    /// Sends a request whose answer nobody waits for (replication).
    pub(crate) fn send_unsolicited(&mut self, to: PeerId, addrs: Vec<Multiaddr>, body: Body) {
        let id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1);
        let bytes = self.encode_request(Message {
            request_id: id,
            body,
        });
        self.push_transmit(Transmit { to, addrs, bytes });
    }

    /// A request's bytes, marked as a client's in client mode.
    fn encode_request(&self, message: Message) -> Bytes {
        if self.config.client {
            message.encode_as_client()
        } else {
            message.encode()
        }
    }

    pub(super) fn respond(&mut self, to: PeerId, addrs: &[Multiaddr], request_id: u64, body: Body) {
        let bytes = Message { request_id, body }.encode();
        self.push_response(to, addrs, bytes);
    }

    pub(super) fn push_response(&mut self, to: PeerId, addrs: &[Multiaddr], bytes: Bytes) {
        self.push_transmit(Transmit {
            to,
            addrs: addrs.to_vec(),
            bytes,
        });
    }

    pub(super) fn push_transmit(&mut self, transmit: Transmit) {
        if self.transmits.len() >= self.config.max_queued_transmits {
            self.dropped_transmits += 1;
            tracing::debug!(to = %transmit.to, "kad transmit queue full; message dropped");
            return;
        }
        self.transmits.push_back(transmit);
    }

    /// Queues a routing or record event (dropped and counted when full).
    pub(crate) fn emit(&mut self, event: Event) {
        if self.events.len() >= self.config.max_queued_events {
            self.dropped_events += 1;
            return;
        }
        self.events.push_back(event);
    }
}
