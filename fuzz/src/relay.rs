//! The relay target: control messages into their decoders and exact
//! readers, and operations into the relay's ledger, whose counts must stay
//! within its limits whatever the order.

use std::time::{Duration, Instant};

use shoal_identity::PeerId;
use shoal_relay::{
    Limits,
    limits::Ledger,
    protocol::{HopMessage, StopMessage},
};

/// A selector byte, then: a hop or stop payload for the decoders (a
/// message that decodes must re-encode to something that decodes to
/// it), a framed stream for the exact readers, or a script of ledger
/// operations (3 bytes each: operation, peer, network or time step).
pub fn relay_messages(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Ok(m) = HopMessage::decode(rest) {
                let again = HopMessage::decode(&m.encode()[4..]);
                assert_eq!(again.ok(), Some(m), "hop round trip");
            }
        }
        1 => {
            if let Ok(m) = StopMessage::decode(rest) {
                let again = StopMessage::decode(&m.encode()[4..]);
                assert_eq!(again.ok(), Some(m), "stop round trip");
            }
        }
        2 => {
            let mut input = rest;
            let read = futures::executor::block_on(async {
                let mut n = 0;
                while HopMessage::read(&mut input).await.is_ok() {
                    n += 1;
                }
                n
            });
            assert!(read <= rest.len() / 4, "each message takes its prefix");
        }
        _ => ledger_script(rest),
    }
}

fn ledger_script(script: &[u8]) {
    let limits = Limits {
        max_reservations: 8,
        max_reservations_per_network: 3,
        max_circuits: 6,
        max_circuits_per_peer: 2,
        max_circuits_per_network: 3,
        reservation_ttl: Duration::from_secs(60),
        ..Limits::default()
    };
    let mut ledger = Ledger::new(limits.clone());
    let start = Instant::now();
    let mut now = start;
    let mut grants = Vec::new();
    let mut tickets = Vec::new();
    let peer = |b: u8| PeerId::from_bytes([b % 16; 32]);
    let network = |b: u8| match b % 5 {
        0 => None,
        n => Some(std::net::IpAddr::from([10, 0, n, 0])),
    };
    for op in script.chunks_exact(3) {
        match op[0] % 5 {
            0 => {
                if let Ok(grant) = ledger.reserve(peer(op[1]), network(op[2]), now) {
                    grants.push((peer(op[1]), grant.id));
                }
            }
            1 => {
                if let Some((p, id)) = grants.get(usize::from(op[1]) % grants.len().max(1)) {
                    ledger.release(p, *id);
                }
            }
            2 => {
                if let Ok(t) = ledger.open_circuit(peer(op[1]), network(op[2]), peer(op[2]), now) {
                    tickets.push(t);
                }
            }
            3 => {
                if !tickets.is_empty() {
                    let t = tickets.swap_remove(usize::from(op[1]) % tickets.len());
                    ledger.close_circuit(t);
                }
            }
            _ => now += Duration::from_secs(u64::from(op[1])),
        }
        assert!(ledger.reservations() <= limits.max_reservations);
        assert!(ledger.circuits() <= limits.max_circuits);
        assert_eq!(ledger.circuits(), tickets.len());
    }
}
