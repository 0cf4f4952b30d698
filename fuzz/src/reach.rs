//! The reachability target: check and result frames into the decoder and
//! into a live core that both checks and is checked.

use std::time::{Duration, Instant};

use shoal::{Core, Direction, Now, Remote};
use shoal_identity::PeerId;
use shoal_reach::{Config, ReachCore, protocol::ReachMessage};

/// A selector byte, then: one frame for the decoder (what decodes must
/// round-trip), or frames split by a two-byte big-endian length, fed to
/// a core from a connected peer with time passing between them.
pub fn reach_messages(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        if let Ok(m) = ReachMessage::decode(rest) {
            assert_eq!(ReachMessage::decode(&m.encode()).ok(), Some(m));
        }
        return;
    }
    let mut core = ReachCore::new(Config::default(), 7);
    let start = Instant::now();
    let mut now = Now::at(start, 1_000);
    let from = Remote {
        peer: PeerId::from_bytes([3; 32]),
        addr: "/ip4/198.51.100.7/tcp/4001".parse().unwrap_or_default(),
        direction: Direction::Inbound,
    };
    core.peer_connected(now, &from);
    let own = "/ip4/203.0.113.9/tcp/4001".parse().unwrap_or_default();
    core.set_candidates(now, &[own]);
    let mut input = rest;
    while input.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([input[0], input[1]]));
        let Some(frame) = input.get(2..2 + len) else {
            break;
        };
        input = &input[2 + len..];
        let _ = core.handle_message(now, &from, frame);
        now = Now::at(now.instant + Duration::from_secs(5), now.unix_ms + 5_000);
        if core.poll_timeout().is_some_and(|t| t <= now.instant) {
            core.handle_timeout(now);
        }
        while core.poll_transmit().is_some() {}
        while core.poll_event().is_some() {}
    }
}
