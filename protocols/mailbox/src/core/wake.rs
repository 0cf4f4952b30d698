//! Wake-ups in the core (see [`crate::wake`]): a client registers an
//! endpoint with a replica; a replica sends the wake-ups its registrations
//! are due; an endpoint reports each token once per
//! [`WAKE_COALESCE`](crate::wake::WAKE_COALESCE).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use shoal::{Multiaddr, Now, PeerId, Transmit};
use shoal_identity::Keypair;

use super::{Event, Mailbox, RequestId};
use crate::id::Descriptor;
use crate::wake::{WAKE_COALESCE, WakeEndpoint, WakeToken};
use crate::wire::Op;

/// Most tokens an endpoint remembers having reported (a peer sending
/// random tokens cannot grow the map past it; beyond it, wake-ups of
/// unknown tokens are dropped until old ones age out).
const MAX_WOKEN: usize = 4096;

/// The wake-up side of a core.
#[derive(Default)]
pub(super) struct WakeState {
    /// When the replica's next wake-up is due.
    pub(super) next: Option<Instant>,
    /// Tokens reported lately, and when.
    woken: HashMap<WakeToken, Instant>,
    /// Endpoint addresses for the service's address book.
    pub(super) addresses: std::collections::VecDeque<(PeerId, Vec<Multiaddr>)>,
}

impl Mailbox {
    /// Asks `replica` to wake `endpoint` when envelopes arrive for the
    /// mailbox of `key` while nobody subscribes, until `until` (Unix
    /// seconds; 0 cancels). The answer is [`Answer::Registered`](crate::Answer::Registered).
    pub fn register_wake(
        &mut self,
        now: Now,
        replica: PeerId,
        descriptor: Descriptor,
        key: &Keypair,
        endpoint: WakeEndpoint,
        until: u64,
    ) -> RequestId {
        let body = self.body(now, replica, descriptor, Op::Register { endpoint, until });
        self.send(now, replica, body, Some(key))
    }

    /// Sends the replica's due wake-ups and notes when the next is due.
    pub(super) fn send_wakeups(&mut self, now: Now) {
        let Some(replica) = self.replica.as_mut() else {
            return;
        };
        for wake in replica.wakeups(now.unix_ms) {
            if !wake.addrs.is_empty() {
                self.wake.addresses.push_back((wake.endpoint, wake.addrs));
            }
            self.transmits.push_back(Transmit {
                peer: wake.endpoint,
                bytes: wake.frame,
            });
        }
        self.wake.next = replica
            .next_wakeup()
            .map(|due| now.instant + Duration::from_millis(due.saturating_sub(now.unix_ms)));
    }

    /// A wake-up for `token` came from `from`.
    pub(super) fn woken(&mut self, now: Now, from: PeerId, token: WakeToken) {
        let woken = &mut self.wake.woken;
        if woken
            .get(&token)
            .is_some_and(|at| now.instant.saturating_duration_since(*at) < WAKE_COALESCE)
        {
            return;
        }
        if woken.len() >= MAX_WOKEN && !woken.contains_key(&token) {
            woken.retain(|_, at| now.instant.saturating_duration_since(*at) < WAKE_COALESCE);
            if woken.len() >= MAX_WOKEN {
                return;
            }
        }
        woken.insert(token, now.instant);
        self.event(Event::Woken { peer: from, token });
    }
}
