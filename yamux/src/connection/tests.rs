//! Sans-IO tests: two cores pumped in memory with a virtual clock, plus a
//! scripted peer for byte-exact checks.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::error::ProtocolViolation;
use crate::frame::FrameType;

const MS: Duration = Duration::from_millis(1);

/// Splits an encoded byte stream into frames.
fn frames(mut bytes: BytesMut) -> Vec<(Header, Vec<u8>)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let h = crate::frame::decode_header(&bytes).unwrap();
        bytes.advance(HEADER_LEN);
        let body = if h.frame_type == FrameType::Data {
            bytes.split_to(h.length as usize).to_vec()
        } else {
            Vec::new()
        };
        out.push((h, body));
    }
    out
}

fn drain(conn: &mut Connection) -> Vec<(Header, Vec<u8>)> {
    let mut buf = BytesMut::new();
    conn.poll_transmit(&mut buf);
    frames(buf)
}

/// Takes the client's output for inspection and puts it on the link as
/// [`Pair::transmit`] would.
fn drain_client_keep(p: &mut Pair) -> Vec<(Header, Vec<u8>)> {
    let mut buf = BytesMut::new();
    p.client.poll_transmit(&mut buf);
    let f = frames(buf.clone());
    p.to_server.push_back((p.now + p.delay, buf));
    f
}

fn events(conn: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

fn no_keepalive() -> Config {
    Config::default().with_keepalive_interval(None)
}

/// Two cores linked by a one-way delay, on a virtual clock.
struct Pair {
    now: Instant,
    delay: Duration,
    client: Connection,
    server: Connection,
    to_server: VecDeque<(Instant, BytesMut)>,
    to_client: VecDeque<(Instant, BytesMut)>,
}

impl Pair {
    fn new(client: Config, server: Config, delay: Duration) -> Self {
        let now = Instant::now();
        Pair {
            now,
            delay,
            client: Connection::new(client, Mode::Client, now),
            server: Connection::new(server, Mode::Server, now),
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
        }
    }

    fn instant() -> Self {
        Pair::new(no_keepalive(), no_keepalive(), Duration::ZERO)
    }

    /// Queues both sides' output on the links.
    fn transmit(&mut self) -> bool {
        let at = self.now + self.delay;
        let mut moved = false;
        let mut buf = BytesMut::new();
        if self.client.poll_transmit(&mut buf) > 0 {
            self.to_server.push_back((at, buf.split()));
            moved = true;
        }
        if self.server.poll_transmit(&mut buf) > 0 {
            self.to_client.push_back((at, buf.split()));
            moved = true;
        }
        moved
    }

    /// Delivers everything due by now.
    fn deliver(&mut self) {
        while self
            .to_server
            .front()
            .is_some_and(|(at, _)| *at <= self.now)
        {
            let (_, mut bytes) = self.to_server.pop_front().unwrap();
            let _ = self.server.handle_input(&mut bytes, self.now);
        }
        while self
            .to_client
            .front()
            .is_some_and(|(at, _)| *at <= self.now)
        {
            let (_, mut bytes) = self.to_client.pop_front().unwrap();
            let _ = self.client.handle_input(&mut bytes, self.now);
        }
    }

    /// With zero delay: exchanges bytes until both sides are quiet.
    fn drive(&mut self) {
        for _ in 0..1000 {
            let moved = self.transmit();
            self.deliver();
            if !moved {
                return;
            }
        }
        panic!("pair never went idle");
    }

    /// Advances the clock, firing timers and delivering due bytes.
    fn step(&mut self, dt: Duration) {
        self.now += dt;
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
        self.deliver();
    }
}

#[test]
fn first_frames_byte_exact() {
    let now = Instant::now();
    let mut c = Connection::new(no_keepalive(), Mode::Client, now);
    let id = c.open_stream().unwrap();
    assert_eq!(id, StreamId::new(1));
    assert_eq!(c.write(id, b"hello").unwrap(), 5);
    let mut buf = BytesMut::new();
    c.poll_transmit(&mut buf);
    let expected: &[u8] = &[
        // Ping(SYN, opaque 1) measuring the round-trip time.
        0x00, 0x02, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 1, //
        // Data(SYN) on stream 1, five bytes, then the payload.
        0x00, 0x00, 0x00, 0x01, 0, 0, 0, 1, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o',
    ];
    assert_eq!(&buf[..], expected);
}

#[test]
fn open_without_write_sends_window_update_syn() {
    let mut c = Connection::new(no_keepalive(), Mode::Server, Instant::now());
    let id = c.open_stream().unwrap();
    assert_eq!(id, StreamId::new(2));
    let f = drain(&mut c);
    assert_eq!(f[1].0, Header::window_update(Flags::SYN, id, 0));
}

#[test]
fn stream_handshake_and_echo() {
    let mut p = Pair::instant();
    let id = p.client.open_stream().unwrap();
    p.client.write(id, b"ping").unwrap();
    p.drive();
    assert!(
        matches!(events(&mut p.server)[..], [Event::InboundStream(i), Event::Readable(j)] if i == id && j == id)
    );
    assert_eq!(p.server.accept_stream(), Some(id));
    let mut buf = [0u8; 8];
    assert_eq!(p.server.read(id, &mut buf, p.now).unwrap(), Some(4));
    assert_eq!(&buf[..4], b"ping");
    assert_eq!(p.server.read(id, &mut buf, p.now).unwrap(), None);
    p.server.write(id, b"pong").unwrap();
    // The ACK rides on the first frame of the accepted stream.
    let f = drain(&mut p.server);
    assert_eq!(f.last().unwrap().0, Header::data(Flags::ACK, id, 4));
    let mut bytes = BytesMut::new();
    for (h, body) in f {
        h.encode(&mut bytes);
        bytes.extend_from_slice(&body);
    }
    p.client.handle_input(&mut bytes, p.now).unwrap();
    assert_eq!(p.client.read(id, &mut buf, p.now).unwrap(), Some(4));
    assert_eq!(&buf[..4], b"pong");
    assert!(p.client.rtt().is_some());
}

#[test]
fn window_exhaustion_and_update() {
    // A fixed window: this test is about batching, not auto-tuning (reading
    // at the instant data arrives would count as a fast reader).
    let fixed = no_keepalive().with_max_stream_window(256 * 1024);
    let mut p = Pair::new(fixed.clone(), fixed, Duration::ZERO);
    let id = p.client.open_stream().unwrap();
    let data = vec![7u8; 300 * 1024];
    assert_eq!(p.client.write(id, &data).unwrap(), 256 * 1024);
    assert_eq!(p.client.write(id, &data).unwrap(), 0);
    p.drive();
    p.server.accept_stream().unwrap();
    assert_eq!(p.server.stream_unread(id), Some(256 * 1024));
    // Reading less than half a window grants nothing (batching).
    let mut buf = vec![0u8; 100 * 1024];
    p.server.read(id, &mut buf, p.now).unwrap();
    p.drive();
    assert_eq!(p.client.stream_send_window(id), Some(0));
    // Crossing half a window sends one update; the writer is told.
    p.server.read(id, &mut buf, p.now).unwrap();
    p.drive();
    assert_eq!(p.client.stream_send_window(id), Some(200 * 1024));
    assert!(
        events(&mut p.client)
            .iter()
            .any(|e| matches!(e, Event::Writable(i) if *i == id))
    );
    assert_eq!(p.client.write(id, &data).unwrap(), 200 * 1024);
}

#[test]
fn data_past_window_is_protocol_error() {
    let mut s = Connection::new(no_keepalive(), Mode::Server, Instant::now());
    let mut wire = BytesMut::new();
    Header::window_update(Flags::SYN, StreamId::new(1), 0).encode(&mut wire);
    Header::data(Flags::NONE, StreamId::new(1), INITIAL_WINDOW + 1).encode(&mut wire);
    let err = s.handle_input(&mut wire, Instant::now()).unwrap_err();
    assert!(matches!(
        err,
        ConnectionError::Protocol(ProtocolViolation::WindowExceeded { .. })
    ));
    assert_eq!(err.go_away_code(), Some(GoAwayCode::ProtocolError));
    let f = drain(&mut s);
    assert_eq!(
        f.last().unwrap().0,
        Header::go_away(GoAwayCode::ProtocolError)
    );
    assert!(matches!(events(&mut s).last(), Some(Event::Closed(_))));
    assert!(s.write(StreamId::new(1), b"x").is_err());
}

#[test]
fn stream_limit_refuses_with_rst_and_connection_lives() {
    let mut p = Pair::new(
        no_keepalive(),
        no_keepalive().with_max_concurrent_streams(2),
        Duration::ZERO,
    );
    let ids: Vec<_> = (0..3).map(|_| p.client.open_stream().unwrap()).collect();
    p.drive();
    assert_eq!(p.server.num_streams(), 2);
    assert!(!p.server.is_closed());
    assert!(
        events(&mut p.client)
            .iter()
            .any(|e| matches!(e, Event::Reset(i) if *i == ids[2]))
    );
    assert!(matches!(
        p.client.write(ids[2], b"x"),
        Err(StreamError::Reset(Blame::Remote))
    ));
    // Our own opens are limited too.
    let mut s = Connection::new(
        no_keepalive().with_max_concurrent_streams(1),
        Mode::Server,
        p.now,
    );
    s.open_stream().unwrap();
    assert!(matches!(s.open_stream(), Err(OpenError::TooManyStreams(1))));
}

#[test]
fn pending_accept_limit() {
    let mut p = Pair::new(
        no_keepalive(),
        no_keepalive().with_max_pending_accept(3),
        Duration::ZERO,
    );
    for _ in 0..5 {
        p.client.open_stream().unwrap();
    }
    p.drive();
    assert_eq!(p.server.pending_accept(), 3);
    let resets = events(&mut p.client)
        .iter()
        .filter(|e| matches!(e, Event::Reset(_)))
        .count();
    assert_eq!(resets, 2);
    // Accepting makes room again.
    p.server.accept_stream().unwrap();
    p.client.open_stream().unwrap();
    p.drive();
    assert_eq!(p.server.pending_accept(), 3);
}

#[test]
fn burst_of_a_thousand_streams_is_accepted_by_default() {
    let mut p = Pair::instant();
    for _ in 0..1000 {
        p.client.open_stream().unwrap();
    }
    p.drive();
    assert_eq!(p.server.pending_accept(), 1000);
    assert!(
        !events(&mut p.client)
            .iter()
            .any(|e| matches!(e, Event::Reset(_) | Event::Closed(_)))
    );
}

#[test]
fn refusals_are_not_held_against_the_peer() {
    let mut p = Pair::new(
        no_keepalive(),
        no_keepalive().with_max_concurrent_streams(100),
        Duration::ZERO,
    );
    let ids: Vec<_> = (0..1000).map(|_| p.client.open_stream().unwrap()).collect();
    // All SYNs reach the server in one input, before it transmits anything.
    let mut wire = BytesMut::new();
    p.client.poll_transmit(&mut wire);
    p.server.handle_input(&mut wire, p.now).unwrap();
    assert!(!p.server.wants_input(), "900 RSTs wait: stop reading");
    let f = drain(&mut p.server);
    assert!(p.server.wants_input());
    let resets = f
        .iter()
        .filter(|(h, _)| h.flags.contains(Flags::RST))
        .count();
    assert_eq!(resets, 900);
    assert!(f.iter().all(|(h, _)| h.frame_type != FrameType::GoAway));
    let mut wire = BytesMut::new();
    for (h, _) in f {
        h.encode(&mut wire);
    }
    p.client.handle_input(&mut wire, p.now).unwrap();
    let reset = events(&mut p.client)
        .iter()
        .filter(|e| matches!(e, Event::Reset(_)))
        .count();
    assert_eq!(reset, 900);
    assert!(!p.client.is_closed() && !p.server.is_closed());
    // Once the accepted streams end, a fresh stream works.
    for &id in &ids[..100] {
        p.client.reset(id).unwrap();
    }
    p.drive();
    assert_eq!(p.server.num_streams(), 0);
    let fresh = p.client.open_stream().unwrap();
    p.client.write(fresh, b"hi").unwrap();
    p.drive();
    let got = p.server.accept_stream().unwrap();
    assert_eq!(got, fresh);
    assert_eq!(p.server.read(fresh, &mut [0u8; 4], p.now).unwrap(), Some(2));
}

#[test]
fn ping_is_answered_with_same_opaque() {
    let mut s = Connection::new(no_keepalive(), Mode::Server, Instant::now());
    drain(&mut s);
    s.handle_bytes(&Header::ping(Flags::SYN, 0xabcd).to_bytes(), Instant::now())
        .unwrap();
    assert_eq!(drain(&mut s)[0].0, Header::ping(Flags::ACK, 0xabcd));
}

#[test]
fn ping_flood_closes_connection() {
    let now = Instant::now();
    let mut s = Connection::new(no_keepalive(), Mode::Server, now);
    let mut wire = BytesMut::new();
    for i in 0..2000 {
        Header::ping(Flags::SYN, i).encode(&mut wire);
    }
    // Drain answers as we go so only the rate limit can trip.
    let mut result = Ok(());
    for chunk in wire.chunks(12 * 100) {
        result = s.handle_bytes(chunk, now);
        drain(&mut s);
        if result.is_err() {
            break;
        }
    }
    assert!(matches!(result, Err(ConnectionError::ControlFlood(_))));
}

#[test]
fn unread_pongs_are_bounded() {
    let now = Instant::now();
    let config = no_keepalive().with_max_pending_control_frames(10);
    let mut s = Connection::new(config, Mode::Server, now);
    let mut wire = BytesMut::new();
    for i in 0..11 {
        Header::ping(Flags::SYN, i).encode(&mut wire);
    }
    let err = s.handle_input(&mut wire, now).unwrap_err();
    assert!(matches!(err, ConnectionError::ControlFlood(_)));
}

#[test]
fn keepalive_pings_and_times_out() {
    let config = Config::default()
        .with_keepalive_interval(Some(Duration::from_secs(30)))
        .with_keepalive_timeout(Duration::from_secs(10));
    let mut p = Pair::new(config.clone(), config, 5 * MS);
    p.transmit();
    p.step(5 * MS);
    p.transmit();
    p.step(5 * MS);
    assert_eq!(p.client.rtt(), Some(10 * MS));
    let next = p.client.poll_timeout().unwrap();
    assert_eq!(next, p.now + Duration::from_secs(30));
    // The keep-alive ping goes out on time; nobody answers it.
    p.step(Duration::from_secs(30));
    let f = drain(&mut p.client);
    assert_eq!(f[0].0.frame_type, FrameType::Ping);
    p.step(Duration::from_secs(10));
    assert!(matches!(
        p.client.close_reason(),
        Some(ConnectionError::KeepAliveTimeout(_))
    ));
    assert_eq!(
        drain(&mut p.client)[0].0,
        Header::go_away(GoAwayCode::InternalError)
    );
}

#[test]
fn go_away_lets_streams_finish_then_both_sides_close() {
    let mut p = Pair::instant();
    let id = p.client.open_stream().unwrap();
    p.drive();
    p.server.accept_stream().unwrap();
    // The server closes: no new streams either way.
    p.server.go_away(p.now);
    assert!(matches!(p.server.open_stream(), Err(OpenError::GoAwaySent)));
    p.drive();
    assert!(
        events(&mut p.client)
            .iter()
            .any(|e| matches!(e, Event::GoAwayReceived(GoAwayCode::Normal)))
    );
    assert!(p.client.go_away_received());
    assert!(matches!(
        p.client.open_stream(),
        Err(OpenError::GoAwayReceived)
    ));
    // A SYN arriving after our GoAway is refused with RST; the connection lives.
    let syn = StreamId::new(3);
    p.server
        .handle_bytes(&Header::window_update(Flags::SYN, syn, 0).to_bytes(), p.now)
        .unwrap();
    assert_eq!(
        drain(&mut p.server).last().unwrap().0,
        Header::window_update(Flags::RST, syn, 0)
    );
    // The existing stream finishes; then both ends close, the client
    // answering the server's GoAway with its own.
    p.client.write(id, b"bye").unwrap();
    p.client.finish(id).unwrap();
    p.drive();
    let mut buf = [0u8; 8];
    assert_eq!(p.server.read(id, &mut buf, p.now).unwrap(), Some(3));
    assert_eq!(p.server.read(id, &mut buf, p.now).unwrap(), Some(0));
    assert!(!p.server.is_closed());
    p.server.finish(id).unwrap();
    let f = {
        p.transmit();
        p.deliver();
        drain(&mut p.client)
    };
    assert_eq!(
        f.last().unwrap().0,
        Header::go_away(GoAwayCode::Normal),
        "the client answers GoAway once its last stream ended"
    );
    for conn in [&p.client, &p.server] {
        assert!(
            conn.close_reason()
                .is_some_and(ConnectionError::is_graceful)
        );
    }
}

#[test]
fn go_away_without_streams_closes_both_ends_in_one_round_trip() {
    let mut p = Pair::new(no_keepalive(), no_keepalive(), 5 * MS);
    p.transmit();
    p.step(5 * MS);
    p.transmit();
    p.step(5 * MS);
    p.client.go_away(p.now);
    // Nothing to wait for: the closer is done at once (its GoAway queued).
    assert!(
        p.client
            .close_reason()
            .is_some_and(ConnectionError::is_graceful)
    );
    assert_eq!(
        drain_client_keep(&mut p).last().unwrap().0,
        Header::go_away(GoAwayCode::Normal)
    );
    p.step(5 * MS);
    // Half a round trip later the remote has answered and closed too.
    assert!(
        p.server
            .close_reason()
            .is_some_and(ConnectionError::is_graceful)
    );
    assert_eq!(
        drain(&mut p.server).last().unwrap().0,
        Header::go_away(GoAwayCode::Normal)
    );
    assert_eq!(p.server.poll_timeout(), None);
}

#[test]
fn close_timeout_resets_streams_left() {
    let grace = Duration::from_secs(2);
    let mut p = Pair::new(
        no_keepalive().with_close_timeout(grace),
        no_keepalive(),
        Duration::ZERO,
    );
    let id = p.client.open_stream().unwrap();
    p.client.write(id, b"x").unwrap();
    p.drive();
    p.server.accept_stream().unwrap();
    p.client.go_away(p.now);
    p.drive();
    assert!(!p.client.is_closed(), "the stream may still finish");
    assert_eq!(p.client.poll_timeout(), Some(p.now + grace));
    p.step(grace);
    assert!(
        p.client
            .close_reason()
            .is_some_and(ConnectionError::is_graceful)
    );
    let f = drain(&mut p.client);
    assert!(
        f.iter()
            .any(|(h, _)| *h == Header::window_update(Flags::RST, id, 0))
    );
    let mut wire = BytesMut::new();
    for (h, _) in f {
        h.encode(&mut wire);
    }
    p.server.handle_input(&mut wire, p.now).unwrap();
    assert!(
        events(&mut p.server)
            .iter()
            .any(|e| matches!(e, Event::Reset(i) if *i == id))
    );
    // The server had seen GoAway and now has no stream: it closes too.
    assert!(
        p.server
            .close_reason()
            .is_some_and(ConnectionError::is_graceful)
    );
    assert!(p.server.write(id, b"late").is_err());
}

#[test]
fn half_close_then_write_back() {
    let mut p = Pair::instant();
    let id = p.client.open_stream().unwrap();
    p.client.write(id, b"request").unwrap();
    p.client.finish(id).unwrap();
    assert!(matches!(
        p.client.write(id, b"x"),
        Err(StreamError::WriteAfterFinish)
    ));
    p.drive();
    p.server.accept_stream().unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(p.server.read(id, &mut buf, p.now).unwrap(), Some(7));
    assert_eq!(p.server.read(id, &mut buf, p.now).unwrap(), Some(0));
    assert!(
        events(&mut p.server)
            .iter()
            .any(|e| matches!(e, Event::Finished(i) if *i == id))
    );
    p.server.write(id, b"response").unwrap();
    p.server.finish(id).unwrap();
    assert_eq!(p.server.num_streams(), 0);
    p.drive();
    assert_eq!(p.client.read(id, &mut buf, p.now).unwrap(), Some(8));
    assert_eq!(p.client.read(id, &mut buf, p.now).unwrap(), Some(0));
    assert_eq!(p.client.num_streams(), 0);
    // Reading a finished, freed stream keeps returning EOF.
    assert_eq!(p.client.read(id, &mut buf, p.now).unwrap(), Some(0));
}

#[test]
fn reset_frees_both_sides() {
    let mut p = Pair::instant();
    let id = p.client.open_stream().unwrap();
    p.client.write(id, b"data").unwrap();
    p.drive();
    p.server.accept_stream().unwrap();
    p.client.reset(id).unwrap();
    p.drive();
    assert!(
        events(&mut p.server)
            .iter()
            .any(|e| matches!(e, Event::Reset(i) if *i == id))
    );
    let mut buf = [0u8; 4];
    assert!(matches!(
        p.server.read(id, &mut buf, p.now),
        Err(StreamError::Reset(Blame::Remote))
    ));
    assert!(matches!(
        p.client.write(id, b"x"),
        Err(StreamError::Reset(Blame::Local))
    ));
    assert_eq!((p.client.num_streams(), p.server.num_streams()), (0, 0));
}

#[test]
fn thousands_of_streams_are_freed() {
    let mut p = Pair::instant();
    let mut buf = [0u8; 64];
    for round in 0..50 {
        let ids: Vec<_> = (0..100).map(|_| p.client.open_stream().unwrap()).collect();
        for (i, &id) in ids.iter().enumerate() {
            p.client.write(id, b"payload").unwrap();
            match i % 3 {
                0 => p.client.reset(id).unwrap(),
                1 => p.client.finish(id).unwrap(),
                // Dropped handles finish gracefully and free on the remote's FIN.
                _ => p.client.drop_stream(id),
            }
        }
        p.drive();
        while let Some(id) = p.server.accept_stream() {
            if id.get() % 5 == 0 {
                p.server.reset(id).unwrap();
                continue;
            }
            while p.server.read(id, &mut buf, p.now).unwrap() != Some(0) {}
            p.server.finish(id).unwrap();
        }
        p.drive();
        for &id in &ids {
            // Reads on the client end its side (EOF, or errors for resets).
            let _ = p.client.read(id, &mut buf, p.now);
        }
        events(&mut p.client);
        events(&mut p.server);
        assert_eq!(p.server.num_streams(), 0, "round {round}");
        assert_eq!(p.client.num_streams(), 0, "round {round}");
    }
    assert!(!p.client.is_closed() && !p.server.is_closed());
}

/// Reads everything `conn` has for `id` until EOF; `None` if EOF did not come.
fn read_all(conn: &mut Connection, id: StreamId, now: Instant) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..10_000 {
        match conn.read(id, &mut buf, now) {
            Ok(Some(0)) => return Some(got),
            Ok(Some(n)) => got.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
    None
}

#[test]
fn drop_after_finish_delivers_unread_data() {
    let mut p = Pair::instant();
    let id = p.client.open_stream().unwrap();
    let data: Vec<u8> = (0..INITIAL_WINDOW).map(|i| (i % 251) as u8).collect();
    assert_eq!(p.client.write(id, &data).unwrap(), data.len());
    p.client.finish(id).unwrap();
    // Dropped before the peer read a single byte: nothing may be lost.
    p.client.drop_stream(id);
    let sent = drain(&mut p.client);
    assert!(sent.iter().all(|(h, _)| !h.flags.contains(Flags::RST)));
    let mut wire = BytesMut::new();
    for (h, body) in sent {
        h.encode(&mut wire);
        wire.extend_from_slice(&body);
    }
    p.server.handle_input(&mut wire, p.now).unwrap();
    p.server.accept_stream().unwrap();
    assert_eq!(read_all(&mut p.server, id, p.now), Some(data));
    // Still live on the dropping side until the remote finishes too.
    assert_eq!(p.client.num_streams(), 1);
    p.server.finish(id).unwrap();
    p.drive();
    assert_eq!((p.client.num_streams(), p.server.num_streams()), (0, 0));
    assert!(
        events(&mut p.client).is_empty(),
        "no events for a dropped stream"
    );
}

#[test]
fn drop_without_finish_sends_fin_not_rst() {
    let mut p = Pair::instant();
    let id = p.client.open_stream().unwrap();
    p.client.write(id, &[9u8; 1000]).unwrap();
    p.client.drop_stream(id);
    let f = drain(&mut p.client);
    assert_eq!(
        f.last().unwrap().0,
        Header::window_update(Flags::FIN, id, 0)
    );
    let mut wire = BytesMut::new();
    for (h, body) in f {
        h.encode(&mut wire);
        wire.extend_from_slice(&body);
    }
    p.server.handle_input(&mut wire, p.now).unwrap();
    p.server.accept_stream().unwrap();
    assert_eq!(read_all(&mut p.server, id, p.now), Some(vec![9u8; 1000]));
    // Writing after a drop is an API error; reading is an unknown stream.
    assert!(matches!(
        p.client.write(id, b"x"),
        Err(StreamError::WriteAfterFinish)
    ));
    assert!(matches!(
        p.client.read(id, &mut [0u8; 4], p.now),
        Err(StreamError::UnknownStream(_))
    ));
}

#[test]
fn drop_with_unread_data_resets() {
    let mut p = Pair::instant();
    let id = p.client.open_stream().unwrap();
    p.client.write(id, b"x").unwrap();
    p.drive();
    p.server.accept_stream().unwrap();
    // Bytes sit unread in the client's buffer when it drops the stream.
    p.server.write(id, &[1u8; 1000]).unwrap();
    p.drive();
    p.client.drop_stream(id);
    assert_eq!(p.client.num_streams(), 0);
    let f = drain(&mut p.client);
    assert_eq!(
        f.last().unwrap().0,
        Header::window_update(Flags::RST, id, 0)
    );
    let mut wire = BytesMut::new();
    for (h, _) in f {
        h.encode(&mut wire);
    }
    p.server.handle_input(&mut wire, p.now).unwrap();
    // The writer learns: its writes fail, it never reads a clean end.
    assert!(matches!(
        p.server.write(id, b"more"),
        Err(StreamError::Reset(Blame::Remote))
    ));
    assert_eq!(p.server.num_streams(), 0);
    assert!(!p.client.is_closed() && !p.server.is_closed());
}

#[test]
fn data_after_drop_resets() {
    let mut p = Pair::instant();
    let id = p.client.open_stream().unwrap();
    p.client.write(id, b"x").unwrap();
    p.drive();
    p.server.accept_stream().unwrap();
    p.server.write(id, b"reply").unwrap();
    p.drive();
    // Everything was read: the drop is a clean FIN.
    assert_eq!(p.client.read(id, &mut [0u8; 8], p.now).unwrap(), Some(5));
    events(&mut p.client);
    p.client.drop_stream(id);
    assert_eq!(
        drain_client_keep(&mut p).last().unwrap().0,
        Header::window_update(Flags::FIN, id, 0)
    );
    p.drive();
    assert_eq!(read_all(&mut p.server, id, p.now), Some(b"x".to_vec()));
    assert_eq!(p.client.num_streams(), 1, "waits for the remote's FIN");
    // More data arrives for the dropped stream: nobody will read it.
    p.server.write(id, &[2u8; 4096]).unwrap();
    p.drive();
    assert_eq!((p.client.num_streams(), p.server.num_streams()), (0, 0));
    assert!(matches!(
        p.server.write(id, b"more"),
        Err(StreamError::Reset(Blame::Remote))
    ));
    assert!(
        events(&mut p.client)
            .iter()
            .all(|e| !matches!(e, Event::Reset(_) | Event::Readable(_))),
        "no events for a dropped stream"
    );
}

#[test]
fn drop_after_remote_finished_frees_at_once() {
    let mut p = Pair::instant();
    let id = p.client.open_stream().unwrap();
    p.client.write(id, b"req").unwrap();
    p.drive();
    p.server.accept_stream().unwrap();
    p.server.write(id, b"reply").unwrap();
    p.server.finish(id).unwrap();
    p.drive();
    assert_eq!(read_all(&mut p.client, id, p.now), Some(b"reply".to_vec()));
    assert_eq!(p.client.num_streams(), 1);
    p.client.drop_stream(id);
    assert_eq!(p.client.num_streams(), 0);
    // Our FIN still goes out, so the server frees its side too.
    let f = drain(&mut p.client);
    assert_eq!(
        f.last().unwrap().0,
        Header::window_update(Flags::FIN, id, 0)
    );
    let mut wire = BytesMut::new();
    for (h, _) in f {
        h.encode(&mut wire);
    }
    p.server.handle_input(&mut wire, p.now).unwrap();
    assert_eq!(read_all(&mut p.server, id, p.now), Some(b"req".to_vec()));
    assert_eq!(p.server.num_streams(), 0);
    // Dropping again is a no-op.
    p.client.drop_stream(id);
    assert!(drain(&mut p.client).is_empty());
}

#[test]
fn drop_after_remote_finished_with_unread_reply_resets() {
    let mut p = Pair::instant();
    let id = p.client.open_stream().unwrap();
    p.client.write(id, b"req").unwrap();
    p.drive();
    p.server.accept_stream().unwrap();
    p.server.write(id, b"unread reply").unwrap();
    p.server.finish(id).unwrap();
    p.drive();
    p.client.drop_stream(id);
    assert_eq!(p.client.num_streams(), 0);
    assert_eq!(
        drain(&mut p.client).last().unwrap().0,
        Header::window_update(Flags::RST, id, 0)
    );
}

#[test]
fn drop_before_anything_was_sent_is_silent() {
    let mut c = Connection::new(no_keepalive(), Mode::Client, Instant::now());
    drain(&mut c);
    let id = c.open_stream().unwrap();
    c.drop_stream(id);
    assert_eq!(c.num_streams(), 0);
    assert!(drain(&mut c).is_empty());
}

#[test]
fn frames_for_unknown_ids() {
    let now = Instant::now();
    // Never opened: protocol error.
    let mut s = Connection::new(no_keepalive(), Mode::Server, now);
    let err = s
        .handle_bytes(
            &Header::data(Flags::NONE, StreamId::new(5), 0).to_bytes(),
            now,
        )
        .unwrap_err();
    assert!(matches!(
        err,
        ConnectionError::Protocol(ProtocolViolation::NeverOpened { .. })
    ));
    // Recently closed: ignored, body skipped.
    let mut p = Pair::instant();
    let id = p.client.open_stream().unwrap();
    p.drive();
    p.server.accept_stream().unwrap();
    p.server.reset(id).unwrap();
    let mut wire = BytesMut::new();
    Header::data(Flags::NONE, id, 3).encode(&mut wire);
    wire.extend_from_slice(b"abc");
    Header::window_update(Flags::NONE, id, 10).encode(&mut wire);
    p.server.handle_input(&mut wire, p.now).unwrap();
    assert!(!p.server.is_closed());
}

#[test]
fn bad_syns_are_protocol_errors() {
    let now = Instant::now();
    let mut s = Connection::new(no_keepalive(), Mode::Server, now);
    let err = s
        .handle_bytes(
            &Header::window_update(Flags::SYN, StreamId::new(2), 0).to_bytes(),
            now,
        )
        .unwrap_err();
    assert!(matches!(
        err,
        ConnectionError::Protocol(ProtocolViolation::WrongParity { .. })
    ));
    let mut s = Connection::new(no_keepalive(), Mode::Server, now);
    let syn = Header::window_update(Flags::SYN, StreamId::new(1), 0).to_bytes();
    s.handle_bytes(&syn, now).unwrap();
    let err = s.handle_bytes(&syn, now).unwrap_err();
    assert!(matches!(
        err,
        ConnectionError::Protocol(ProtocolViolation::ReusedId { .. })
    ));
}

#[test]
fn malformed_header_closes_with_protocol_error() {
    let now = Instant::now();
    let mut s = Connection::new(no_keepalive(), Mode::Server, now);
    drain(&mut s);
    let err = s
        .handle_bytes(&[0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], now)
        .unwrap_err();
    assert!(matches!(
        err,
        ConnectionError::Malformed(crate::FrameError::UnknownType(9))
    ));
    assert_eq!(
        drain(&mut s)[0].0,
        Header::go_away(GoAwayCode::ProtocolError)
    );
}

#[test]
fn data_with_fin_and_syn_in_one_frame() {
    let now = Instant::now();
    let mut s = Connection::new(no_keepalive(), Mode::Server, now);
    let mut wire = BytesMut::new();
    Header::data(Flags::SYN | Flags::FIN, StreamId::new(1), 2).encode(&mut wire);
    wire.extend_from_slice(b"hi");
    s.handle_input(&mut wire, now).unwrap();
    let id = s.accept_stream().unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(s.read(id, &mut buf, now).unwrap(), Some(2));
    assert_eq!(s.read(id, &mut buf, now).unwrap(), Some(0));
    // RST on a data frame resets; its payload is skipped.
    let mut wire = BytesMut::new();
    Header::data(Flags::SYN, StreamId::new(3), 0).encode(&mut wire);
    Header::data(Flags::RST, StreamId::new(3), 2).encode(&mut wire);
    wire.extend_from_slice(b"zz");
    s.handle_input(&mut wire, now).unwrap();
    assert!(!s.contains_stream(StreamId::new(3)));
}

#[test]
fn write_only_stream_gets_window_updates_without_reading() {
    let mut p = Pair::instant();
    let id = p.client.open_stream().unwrap();
    let data = vec![1u8; 64 * 1024];
    let mut sent = 0usize;
    let mut received = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..200 {
        sent += p.client.write(id, &data).unwrap();
        p.drive();
        p.server.accept_stream();
        while let Some(n) = p.server.read(id, &mut buf, p.now).unwrap() {
            if n == 0 {
                break;
            }
            received += n;
        }
        p.drive();
    }
    // The client never read stream `id`, yet was never stalled.
    assert_eq!(sent, 200 * 64 * 1024);
    assert_eq!(received, sent);
}

/// Streams `total` bytes over a link with `rtt`, the reader taking at most
/// `read_per_ms` bytes per simulated millisecond. Returns the final window.
fn simulate_transfer(rtt: Duration, read_per_ms: usize, millis: u32) -> u32 {
    let config = no_keepalive().with_max_stream_window(4 * 1024 * 1024);
    let mut p = Pair::new(config.clone(), config, rtt / 2);
    let id = p.client.open_stream().unwrap();
    let chunk = vec![0u8; 512 * 1024];
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..millis {
        p.client.write(id, &chunk).unwrap();
        p.server.accept_stream();
        let mut budget = read_per_ms;
        while budget > 0 {
            let want = budget.min(buf.len());
            match p.server.read(id, &mut buf[..want], p.now) {
                Ok(Some(n)) if n > 0 => budget -= n,
                _ => break,
            }
        }
        p.transmit();
        p.step(MS);
    }
    p.server.stream_receive_window(id).unwrap()
}

#[test]
fn autotuning_grows_window_for_fast_reader() {
    let window = simulate_transfer(100 * MS, usize::MAX, 2000);
    assert_eq!(
        window,
        4 * 1024 * 1024,
        "fast reader should reach the max window"
    );
}

#[test]
fn autotuning_keeps_window_for_slow_reader() {
    // 400 KB/s: half a window takes ~320 ms, more than 2 RTTs of 100 ms.
    let window = simulate_transfer(100 * MS, 400, 2000);
    assert_eq!(window, INITIAL_WINDOW);
}

/// A client-side script producing a byte stream for the server.
fn scripted_wire() -> BytesMut {
    let now = Instant::now();
    let mut c = Connection::new(no_keepalive(), Mode::Client, now);
    let mut wire = BytesMut::new();
    let a = c.open_stream().unwrap();
    let b = c.open_stream().unwrap();
    let d = c.open_stream().unwrap();
    c.write(a, &[1u8; 5000]).unwrap();
    c.write(b, b"small").unwrap();
    c.poll_transmit(&mut wire);
    c.write(a, &[2u8; 70_000]).unwrap();
    c.finish(a).unwrap();
    c.reset(d).unwrap();
    c.write(b, &[3u8; 300]).unwrap();
    c.poll_transmit(&mut wire);
    for (i, id) in [a, b].into_iter().enumerate() {
        Header::ping(Flags::SYN, i as u32).encode(&mut wire);
        Header::window_update(Flags::NONE, id, 1000).encode(&mut wire);
    }
    wire
}

/// Feeds chunks to a fresh server and records everything observable.
fn observe(chunks: &[&[u8]]) -> (Vec<String>, Vec<u8>, Vec<Vec<u8>>) {
    let now = Instant::now();
    let mut s = Connection::new(no_keepalive(), Mode::Server, now);
    let mut seen = Vec::new();
    for chunk in chunks {
        let _ = s.handle_bytes(chunk, now);
    }
    while let Some(e) = s.poll_event() {
        seen.push(format!("{e:?}"));
    }
    let mut data = Vec::new();
    while let Some(id) = s.accept_stream() {
        let mut got = Vec::new();
        let mut buf = [0u8; 1000];
        while let Ok(Some(n)) = s.read(id, &mut buf, now) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        data.push(got);
    }
    let mut out = BytesMut::new();
    s.poll_transmit(&mut out);
    (seen, out.to_vec(), data)
}

proptest! {
    #[test]
    fn chunking_does_not_change_results(cuts in proptest::collection::vec(0usize..80_000, 0..20)) {
        let wire = scripted_wire();
        let whole = observe(&[&wire]);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (wire.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for cut in cuts {
            chunks.push(&wire[start..cut]);
            start = cut;
        }
        chunks.push(&wire[start..]);
        prop_assert_eq!(observe(&chunks), whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), client in any::<bool>()) {
        let now = Instant::now();
        let mode = if client { Mode::Client } else { Mode::Server };
        let mut c = Connection::new(no_keepalive(), mode, now);
        let _ = c.handle_bytes(&bytes, now);
        let mut out = BytesMut::new();
        c.poll_transmit(&mut out);
        while c.poll_event().is_some() {}
    }

    #[test]
    fn arbitrary_headers_never_panic(
        headers in proptest::collection::vec((0u8..4, any::<u16>(), 0u32..8, 0u32..300_000), 0..64)
    ) {
        let now = Instant::now();
        let mut c = Connection::new(no_keepalive(), Mode::Server, now);
        let mut wire = BytesMut::new();
        for (ty, flags, id, len) in headers {
            let ty = FrameType::from_u8(ty).unwrap();
            Header::new(ty, Flags::from_bits(flags), StreamId::new(id), len).encode(&mut wire);
            if ty == FrameType::Data {
                wire.extend_from_slice(&vec![0u8; (len as usize).min(1024)]);
            }
        }
        let _ = c.handle_input(&mut wire, now);
        while let Some(id) = c.accept_stream() {
            let _ = c.read(id, &mut [0u8; 64], now);
            let _ = c.write(id, b"x");
        }
    }
}

#[test]
fn end_of_stream_reads_after_the_last_stream_closed_the_connection() {
    let mut p = Pair::instant();
    let id = p.client.open_stream().unwrap();
    p.client.write(id, b"q").unwrap();
    p.client.finish(id).unwrap();
    p.client.go_away(p.now);
    p.drive();
    p.server.accept_stream().unwrap();
    p.server.write(id, b"answer").unwrap();
    p.server.finish(id).unwrap();
    p.drive();
    let mut buf = [0u8; 16];
    assert_eq!(p.client.read(id, &mut buf, p.now).unwrap(), Some(6));
    // That read ended the last stream, and with it the connection...
    assert!(
        p.client
            .close_reason()
            .is_some_and(ConnectionError::is_graceful)
    );
    // ...yet the reader still gets its clean end of stream, not an error.
    assert_eq!(p.client.read(id, &mut buf, p.now).unwrap(), Some(0));
}

#[test]
fn data_kept_after_a_graceful_close_is_read_then_freed() {
    let mut p = Pair::instant();
    let id = p.client.open_stream().unwrap();
    p.client.write(id, b"q").unwrap();
    p.client.finish(id).unwrap();
    p.drive();
    p.server.accept_stream().unwrap();
    assert_eq!(read_all(&mut p.server, id, p.now), Some(b"q".to_vec()));
    p.server.write(id, b"answer").unwrap();
    p.server.finish(id).unwrap();
    p.server.go_away(p.now);
    p.drive();
    // The server has nothing left and closed; its end of file arrives while
    // the client has not read the answer yet.
    assert!(p.server.is_closed());
    p.client.handle_transport_closed();
    assert!(
        p.client
            .close_reason()
            .is_some_and(ConnectionError::is_graceful)
    );
    assert_eq!(p.client.num_streams(), 1, "kept for its unread data");
    let mut buf = [0u8; 16];
    assert_eq!(p.client.read(id, &mut buf, p.now).unwrap(), Some(6));
    assert_eq!(p.client.num_streams(), 0, "freed once read");
    assert_eq!(p.client.read(id, &mut buf, p.now).unwrap(), Some(0));
    assert!(p.client.write(id, b"x").is_err());
}

#[test]
fn a_flood_of_refusals_does_not_hide_how_a_stream_ended() {
    let mut p = Pair::new(
        no_keepalive(),
        no_keepalive().with_max_concurrent_streams(1),
        Duration::ZERO,
    );
    let id = p.client.open_stream().unwrap();
    p.client.write(id, b"q").unwrap();
    p.client.finish(id).unwrap();
    p.drive();
    let sid = p.server.accept_stream().unwrap();
    p.server.finish(sid).unwrap();
    p.drive();
    // The server's stream is done (both FINs, nothing unread)...
    assert_eq!(p.server.read(sid, &mut [0u8; 4], p.now).unwrap(), Some(1));
    // ...then 5,000 SYNs are refused (the limit is 1 and it is taken by
    // the client's side no more: open one that stays).
    let keep = p.client.open_stream().unwrap();
    p.client.write(keep, b"k").unwrap();
    p.drive();
    let mut wire = BytesMut::new();
    for i in 0..5_000u32 {
        Header::window_update(Flags::SYN, StreamId::new(101 + 2 * i), 0).encode(&mut wire);
    }
    p.server.handle_input(&mut wire, p.now).unwrap();
    // The finished stream still reads its clean end.
    assert_eq!(p.server.read(sid, &mut [0u8; 4], p.now).unwrap(), Some(0));
}
