//! The bodies of Shoal's fuzz targets.
//!
//! Each function takes arbitrary bytes and must return without panicking,
//! whatever they are. cargo-fuzz calls them from `fuzz/libfuzzer/fuzz_targets/*.rs`
//! (one line each); the normal test suite replays the committed corpus in
//! `fuzz/corpus/<target>/` through the same functions, so CI checks every
//! seed and every regression input without a fuzzer.
//!
//! | target | what it feeds |
//! |---|---|
//! | [`yamux_frame`] | the 12-byte yamux header decoder |
//! | [`yamux_session`] | a sans-IO yamux connection, as a chunked byte stream with time passing |
//! | [`secio_handshake`] | both handshake roles, message by message |
//! | [`secio_frame`] | the frame-length decoder and a secure stream's read path |
//! | [`protocol_messages`] | the service layer's negotiation frames and the ping, identify and discovery messages and signed peer records |
//! | [`routing_messages`] | Kademlia and gossip frames, into their decoders and into live sans-IO cores, and signed DHT records |
//! | [`im_messages`] | the messenger's envelopes, padding, messages, payloads, presence records, initial headers and user ids, and envelopes (arbitrary or genuine with bytes spliced in) fed to a live engine |
//! | [`mailbox_messages`] | mailbox frames into the decoder and into a live core that keeps mailboxes (genuine signed requests, answers and pushes as seeds), and descriptors |
//! | [`mailbox_sync()`] | replica sync: range lists into the codec and a set's answer, sync frames (genuine hand-offs as seeds) into a live replica core |
//! | [`reach_messages`] | reachability checks and results into the decoder and into a live core that checks and is checked |
//! | [`relay_messages`] | relay hop and stop messages into the decoders and exact readers, and scripts of reservations and circuits into the relay's ledger |

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod im;
mod io;
pub mod mailbox;
pub mod mailbox_sync;
mod reach;
mod relay;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use shoal_identity::Keypair;
use shoal_secio::{
    InitiatorHandshake, ResponderHandshake,
    frame::FrameDecoder,
    handshake::{InitiatorStep, ResponderStep},
};
use shoal_yamux::{Connection, Event, Mode, frame::Header};

pub use im::im_messages;
pub use mailbox::mailbox_messages;
pub use mailbox_sync::mailbox_sync;
pub use reach::reach_messages;
pub use relay::relay_messages;

/// The names of all targets, as used for corpus directories.
pub const TARGETS: [&str; 11] = [
    "yamux_frame",
    "yamux_session",
    "secio_handshake",
    "secio_frame",
    "protocol_messages",
    "routing_messages",
    "im_messages",
    "mailbox_messages",
    "mailbox_sync",
    "relay_messages",
    "reach_messages",
];

/// Runs the target called `name` on `data`; `false` for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "yamux_frame" => yamux_frame(data),
        "yamux_session" => yamux_session(data),
        "secio_handshake" => secio_handshake(data),
        "secio_frame" => secio_frame(data),
        "protocol_messages" => protocol_messages(data),
        "routing_messages" => routing_messages(data),
        "im_messages" => im_messages(data),
        "mailbox_messages" => mailbox_messages(data),
        "mailbox_sync" => mailbox_sync(data),
        "relay_messages" => relay_messages(data),
        "reach_messages" => reach_messages(data),
        _ => return false,
    }
    true
}

/// Decodes a yamux header from `data`, with a small and the default Data
/// length bound; a header that decodes must re-encode to the same bytes.
pub fn yamux_frame(data: &[u8]) {
    if let Ok(header) = shoal_yamux::frame::decode_header(data) {
        let mut out = BytesMut::new();
        header.encode(&mut out);
        assert_eq!(&out[..], &data[..out.len()], "decode/encode round trip");
    }
    let _ = Header::decode(data, 1024);
}

/// Feeds `data[1..]` to a fresh connection as its input stream, in chunks
/// whose size is set by `data[0]`, reading every stream that becomes
/// readable, accepting every inbound stream and advancing a virtual clock.
pub fn yamux_session(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let mode = if control & 1 == 0 {
        Mode::Client
    } else {
        Mode::Server
    };
    let chunk = 1 + (control as usize >> 1);
    let start = Instant::now();
    let mut now = start;
    let mut conn = Connection::new(shoal_yamux::Config::default(), mode, now);
    let mut out = BytesMut::new();
    let mut buf = vec![0u8; 4096];
    for (i, piece) in rest.chunks(chunk).enumerate() {
        let mut input = BytesMut::from(piece);
        let failed = conn.handle_input(&mut input, now).is_err();
        while let Some(event) = conn.poll_event() {
            match event {
                Event::InboundStream(_) => {
                    while let Some(id) = conn.accept_stream() {
                        let _ = conn.write(id, b"reply");
                    }
                }
                Event::Readable(id) => while let Ok(Some(1..)) = conn.read(id, &mut buf, now) {},
                Event::Finished(id) => {
                    let _ = conn.finish(id);
                }
                _ => {}
            }
        }
        out.clear();
        conn.poll_transmit(&mut out);
        if failed || conn.is_closed() {
            return;
        }
        if i % 4 == 3
            && let Ok(id) = conn.open_stream()
        {
            let _ = conn.write(id, &piece[..piece.len().min(64)]);
        }
        now += Duration::from_millis(u64::from(control) * 7);
        conn.handle_timeout(now);
    }
}

/// Splits `data` into messages: each is a one-byte length then that many
/// bytes (the last one takes what is left).
fn messages(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        let (&len, tail) = rest.split_first()?;
        let len = (len as usize).min(tail.len());
        let (msg, tail) = tail.split_at(len);
        rest = tail;
        Some(msg)
    })
}

fn config(seed: u8) -> shoal_secio::Config {
    shoal_secio::Config::new(Keypair::from_secret_bytes(&[seed; 32]))
}

/// `data[0]` picks the role: even runs a responder fed the messages of
/// `data[1..]`, odd runs an initiator that sends its hello and is then fed them.
pub fn secio_handshake(data: &[u8]) {
    let Some((&role, rest)) = data.split_first() else {
        return;
    };
    if role % 2 == 0 {
        let mut state = ResponderHandshake::new(&config(1), None);
        for msg in messages(rest) {
            match state.handle(msg) {
                Ok(ResponderStep::Send { next, .. }) => state = next,
                _ => return,
            }
        }
    } else {
        let Ok((mut state, _hello)) = InitiatorHandshake::start(&config(2), None) else {
            return;
        };
        for msg in messages(rest) {
            match state.handle(msg) {
                Ok(InitiatorStep::Send { next, .. }) => state = next,
                _ => return,
            }
        }
    }
}

/// Decodes frame lengths from `data` with both decoders, then completes a
/// real handshake in memory and gives `data` to the resulting secure stream
/// as the bytes arriving from its peer, reading until error or end.
pub fn secio_frame(data: &[u8]) {
    for decoder in [FrameDecoder::transport(), FrameDecoder::handshake(4096)] {
        let mut rest = data;
        while let Ok(Some(body)) = decoder.decode(rest) {
            rest = &rest[shoal_secio::frame::LEN_PREFIX + body.len()..];
        }
    }
    if let Some(outcome) = io::handshake_in_memory() {
        io::read_secure_stream(outcome, data);
    }
}

/// `data[0]` picks a decoder of the layers above yamux, which gets
/// `data[1..]`: 0 negotiation frames (decoded one after another), 1 ping,
/// 2 identify, 3 discovery, 4 a signed peer record envelope, 5 a bare peer
/// record.
pub fn protocol_messages(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 6 {
        0 => {
            let mut input = rest;
            while let Ok(Some((_, used))) = shoal::negotiation::decode_frame(input) {
                if used == 0 || used > input.len() {
                    break;
                }
                input = &input[used..];
            }
        }
        1 => {
            let _ = shoal_ping::PingMessage::decode(rest);
        }
        2 => {
            let _ = shoal_identify::IdentifyInfo::decode(rest);
        }
        3 => {
            let _ = shoal_discovery::DiscoveryMessage::decode(rest);
        }
        4 => {
            let _ = shoal_identify::SignedPeerRecord::from_bytes(rest);
        }
        _ => {
            let _ = shoal_identify::PeerRecord::decode(rest);
        }
    }
}

/// A selector byte, then frames for the routing protocols: Kademlia frames
/// fed to a live core (with time passing between them), a signed DHT record,
/// gossip frames fed to a live core from a connected peer, or the gossip
/// frame decoder alone. Frames after the selector are split by a two-byte
/// big-endian length prefix, so one input can drive a core through several
/// messages.
pub fn routing_messages(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let start = Instant::now();
    let unix = 1_800_000_000;
    let peer = shoal_identity::PeerId::from_bytes([7; 32]);
    match which % 4 {
        0 => {
            let mut core = shoal_kad::Kademlia::new(
                shoal_identity::PeerId::from_bytes([1; 32]),
                shoal_kad::Config::default(),
                1,
            );
            for (i, frame) in length_prefixed(rest).enumerate() {
                let now = start + Duration::from_secs(i as u64);
                let _ = core.handle_message(now, unix + i as u64, peer, &[], frame);
                core.handle_timeout(now, unix + i as u64);
                while core.poll_transmit().is_some() {}
                while core.poll_event().is_some() {}
            }
        }
        1 => {
            let _ = shoal_kad::SignedRecord::from_bytes(bytes::Bytes::copy_from_slice(rest));
        }
        2 => {
            let mut core = shoal_gossip::Gossip::new(
                Keypair::from_secret_bytes(&[1; 32]),
                shoal_gossip::Config::default(),
                1,
            );
            core.peer_connected(start, peer);
            for (i, frame) in length_prefixed(rest).enumerate() {
                let now = start + Duration::from_millis(300 * i as u64);
                let _ = core.handle_message(now, peer, frame);
                core.handle_timeout(now);
                while core.poll_transmit().is_some() {}
                while core.poll_event().is_some() {}
            }
        }
        _ => {
            let _ = shoal_gossip::protocol::decode_frame(bytes::Bytes::copy_from_slice(rest));
        }
    }
}

/// Splits `data` into frames, each preceded by its length in two bytes
/// (big-endian); a short last frame is cut off.
pub(crate) fn length_prefixed(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (len, rest) = data.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len)).min(rest.len());
        let (frame, tail) = rest.split_at(len);
        data = tail;
        Some(frame)
    })
}
