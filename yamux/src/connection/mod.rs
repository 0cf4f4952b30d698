//! The sans-IO yamux connection core.
//!
//! This file is long on purpose (about 800 lines): it is the connection's
//! one state machine (frames in and out, windows, the close handshake,
//! resets and the drop rule), and its transitions are read and reviewed
//! together. What stands alone lives in the child modules: inbound frame
//! handling (`inbound.rs`), the limits (`limits.rs`) and one stream's state
//! (`stream_state.rs`).

mod inbound;
mod limits;
mod stream_state;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use self::limits::{ControlBudget, Ended, RecentlyClosed};
use self::stream_state::StreamState;
use crate::config::{
    AUTOTUNE_MIN_RTT, AUTOTUNE_RTT_FACTOR, INITIAL_WINDOW, RECENTLY_CLOSED_CAPACITY,
};
use crate::error::{Blame, ConnectionError, OpenError, StreamError};
use crate::frame::{Flags, GoAwayCode, HEADER_LEN, Header};
use crate::{Config, Mode, StreamId};

/// Something the application should know about, drained with
/// [`Connection::poll_event`].
///
/// Stream events are coalesced: at most one `Readable` per stream until the
/// application reads it again, one `Writable` per cut-short write, one
/// `Finished` and one `Reset` per stream.
#[derive(Debug, Clone)]
pub enum Event {
    /// The remote opened a stream; take it with [`Connection::accept_stream`].
    InboundStream(StreamId),
    /// Data arrived on a stream the application has read since the last
    /// `Readable` for it.
    Readable(StreamId),
    /// A stream whose write was cut short may write again (window opened or
    /// send buffer drained).
    Writable(StreamId),
    /// The remote half-closed the stream (FIN); reads return EOF after the
    /// buffered data.
    Finished(StreamId),
    /// The remote reset the stream (RST); its state is gone.
    Reset(StreamId),
    /// The remote sent GoAway: no new streams may be opened.
    GoAwayReceived(GoAwayCode),
    /// The connection ended; every later call fails with this error.
    Closed(ConnectionError),
}

/// An in-progress Data body: where its bytes go.
#[derive(Debug)]
struct Body {
    /// `None` discards (refused or already closed stream).
    target: Option<StreamId>,
    remaining: u32,
    fin: bool,
}

/// Keep-alive and round-trip-time bookkeeping.
#[derive(Debug)]
struct Pinger {
    /// Opaque value and send time of the ping awaiting its ACK.
    outstanding: Option<(u32, Instant)>,
    next_ping: Option<Instant>,
    next_opaque: u32,
    rtt: Option<Duration>,
}

/// A yamux connection as a state machine: no I/O, no clock, no tokio.
///
/// # Calling order
///
/// 1. Create it with [`Connection::new`] (this queues a ping that measures
///    the round-trip time).
/// 2. Feed everything read from the transport to
///    [`handle_input`](Connection::handle_input) (reading more only while
///    [`wants_input`](Connection::wants_input) says so), and call
///    [`handle_timeout`](Connection::handle_timeout) when the instant from
///    [`poll_timeout`](Connection::poll_timeout) has passed; report
///    end-of-file with [`handle_transport_closed`](Connection::handle_transport_closed).
/// 3. Issue application commands at any time:
///    [`open_stream`](Connection::open_stream),
///    [`accept_stream`](Connection::accept_stream),
///    [`write`](Connection::write), [`read`](Connection::read),
///    [`finish`](Connection::finish), [`reset`](Connection::reset),
///    [`drop_stream`](Connection::drop_stream) (the handle is gone),
///    [`go_away`](Connection::go_away).
/// 4. After any of the above, drain the outputs in this order:
///    [`poll_event`](Connection::poll_event) until `None`,
///    [`poll_transmit`](Connection::poll_transmit) and write the bytes out,
///    then re-arm the timer from [`poll_timeout`](Connection::poll_timeout).
///
/// Events are queued per peer action; an application that never drains
/// them lets the queue grow, so drain after every `handle_*` call.
///
/// ```
/// use std::time::Instant;
/// use bytes::BytesMut;
/// use shoal_yamux::{Config, Connection, Event, Mode};
///
/// let now = Instant::now();
/// let mut client = Connection::new(Config::default(), Mode::Client, now);
/// let mut server = Connection::new(Config::default(), Mode::Server, now);
/// let id = client.open_stream().unwrap();
/// assert_eq!(client.write(id, b"hello").unwrap(), 5);
///
/// let mut wire = BytesMut::new();
/// client.poll_transmit(&mut wire);
/// server.handle_input(&mut wire, now).unwrap();
/// let accepted = server.accept_stream().unwrap();
/// let mut buf = [0u8; 16];
/// assert_eq!(server.read(accepted, &mut buf, now).unwrap(), Some(5));
/// assert_eq!(&buf[..5], b"hello");
/// ```
#[derive(Debug)]
pub struct Connection {
    config: Config,
    mode: Mode,
    /// Last instant seen through an input; used for stream creation times.
    now: Instant,
    streams: HashMap<StreamId, StreamState>,
    accept_queue: VecDeque<StreamId>,
    events: VecDeque<Event>,
    /// Encoded frames waiting for `poll_transmit`. Starts empty and grows
    /// with use (an idle connection holds no output buffer); it is swapped
    /// with the caller's emptied buffer, so the steady state reuses two.
    out: BytesMut,
    /// Streams owing SYN/ACK that must go out even if they send nothing else.
    flag_pending: Vec<StreamId>,
    /// Streams whose write was cut short by the send-buffer bound.
    waiting_room: Vec<StreamId>,
    next_local_id: u64,
    max_remote_id: u32,
    recently_closed: RecentlyClosed,
    /// Ids of streams we refused, apart from `recently_closed`, so that a
    /// flood of refusals cannot push out how finished streams ended.
    recently_refused: RecentlyClosed,
    budget: ControlBudget,
    /// Sum of all stream receive windows (auto-tuning budget).
    total_window: u64,
    header_buf: [u8; HEADER_LEN],
    header_len: usize,
    body: Option<Body>,
    pinger: Pinger,
    local_go_away: bool,
    remote_go_away: bool,
    /// After our GoAway: when the streams left are reset.
    close_deadline: Option<Instant>,
    closed: Option<ConnectionError>,
}

impl Connection {
    /// Creates a connection and queues the initial RTT-measuring ping.
    pub fn new(config: Config, mode: Mode, now: Instant) -> Self {
        let budget = ControlBudget::new(
            config.max_control_frames_per_sec(),
            config.max_pending_control_frames(),
        );
        let mut conn = Connection {
            config,
            mode,
            now,
            streams: HashMap::new(),
            accept_queue: VecDeque::new(),
            events: VecDeque::new(),
            out: BytesMut::new(),
            flag_pending: Vec::new(),
            waiting_room: Vec::new(),
            next_local_id: u64::from(mode.first_local_id()),
            max_remote_id: 0,
            recently_closed: RecentlyClosed::new(RECENTLY_CLOSED_CAPACITY),
            recently_refused: RecentlyClosed::new(RECENTLY_CLOSED_CAPACITY),
            budget,
            total_window: 0,
            header_buf: [0; HEADER_LEN],
            header_len: 0,
            body: None,
            pinger: Pinger {
                outstanding: None,
                next_ping: None,
                next_opaque: 1,
                rtt: None,
            },
            local_go_away: false,
            remote_go_away: false,
            close_deadline: None,
            closed: None,
        };
        conn.send_ping(now);
        conn
    }

    // ----- application commands -----

    /// Opens a stream. Nothing is sent until [`poll_transmit`](Self::poll_transmit);
    /// a write before that carries the SYN on its Data frame.
    pub fn open_stream(&mut self) -> Result<StreamId, OpenError> {
        if let Some(e) = &self.closed {
            return Err(OpenError::Connection(e.clone()));
        }
        if self.local_go_away {
            return Err(OpenError::GoAwaySent);
        }
        if self.remote_go_away {
            return Err(OpenError::GoAwayReceived);
        }
        let limit = self.config.max_concurrent_streams();
        if self.streams.len() >= limit {
            return Err(OpenError::TooManyStreams(limit));
        }
        let raw = u32::try_from(self.next_local_id).map_err(|_| OpenError::IdsExhausted)?;
        self.next_local_id += 2;
        let id = StreamId::new(raw);
        self.streams
            .insert(id, StreamState::new(self.now, INITIAL_WINDOW, Flags::SYN));
        self.total_window += u64::from(INITIAL_WINDOW);
        self.flag_pending.push(id);
        Ok(id)
    }

    /// Takes the oldest inbound stream not yet accepted; its ACK goes out
    /// with its next frame or the next `poll_transmit`.
    pub fn accept_stream(&mut self) -> Option<StreamId> {
        while let Some(id) = self.accept_queue.pop_front() {
            if let Some(s) = self.streams.get_mut(&id) {
                s.pending_flag |= Flags::ACK;
                self.flag_pending.push(id);
                return Some(id);
            }
        }
        None
    }

    /// Writes as much of `data` as the stream's send window and the send
    /// buffer allow, and returns how much was taken. `Ok(0)` means blocked:
    /// an [`Event::Writable`] follows when the stream may write again.
    pub fn write(&mut self, id: StreamId, data: &[u8]) -> Result<usize, StreamError> {
        let limit = self.config.max_send_buffer();
        let max_frame = self.config.max_frame_size() as usize;
        let buffered = self.out.len();
        self.check_open()?;
        let Some(stream) = self.streams.get_mut(&id) else {
            return Err(self.missing(id));
        };
        if stream.local_fin {
            return Err(StreamError::WriteAfterFinish);
        }
        if data.is_empty() {
            return Ok(0);
        }
        let room = if buffered < limit { limit } else { 0 };
        let n = data.len().min(stream.send_credit as usize).min(room);
        if n < data.len() {
            // Queue for a buffer-drained wake-up once; a window-blocked
            // stream is woken by the remote's WindowUpdate instead.
            if !stream.write_blocked && room < data.len() && stream.send_credit > 0 {
                self.waiting_room.push(id);
            }
            stream.write_blocked = true;
        }
        if n == 0 {
            return Ok(0);
        }
        // n <= send_credit, a u32.
        stream.send_credit -= n as u32;
        let mut flags = stream.take_flag();
        self.out.reserve(n + n.div_ceil(max_frame) * HEADER_LEN);
        for chunk in data[..n].chunks(max_frame) {
            Header::data(flags, id, chunk.len() as u32).encode(&mut self.out);
            self.out.extend_from_slice(chunk);
            flags = Flags::NONE;
        }
        Ok(n)
    }

    /// Copies buffered bytes into `buf`.
    ///
    /// Returns `Some(n)` with `n > 0` for data, `Some(0)` at end of stream
    /// (the remote finished and everything was read), `None` when nothing
    /// is buffered yet (an [`Event::Readable`] follows). `now` drives
    /// receive-window auto-tuning; credit is granted here, as the
    /// application reads.
    pub fn read(
        &mut self,
        id: StreamId,
        buf: &mut [u8],
        now: Instant,
    ) -> Result<Option<usize>, StreamError> {
        self.check_readable()?;
        let Some(stream) = self.streams.get_mut(&id) else {
            return self.read_missing(id).map(|()| Some(0));
        };
        if stream.dropped {
            return Err(StreamError::UnknownStream(id));
        }
        stream.notify_readable = true;
        if !stream.has_data() {
            return Ok(if stream.remote_fin && stream.unread == 0 {
                Some(0)
            } else {
                None
            });
        }
        let n = stream.read_into(buf);
        self.after_read(id, now);
        Ok(Some(n))
    }

    /// Like [`read`](Self::read) but hands out up to `max` buffered bytes
    /// without copying. `Ok(Some(empty))` is end of stream.
    pub fn read_chunk(
        &mut self,
        id: StreamId,
        max: usize,
        now: Instant,
    ) -> Result<Option<Bytes>, StreamError> {
        self.check_readable()?;
        let Some(stream) = self.streams.get_mut(&id) else {
            return self.read_missing(id).map(|()| Some(Bytes::new()));
        };
        if stream.dropped {
            return Err(StreamError::UnknownStream(id));
        }
        stream.notify_readable = true;
        match stream.read_chunk(max) {
            Some(chunk) => {
                self.after_read(id, now);
                Ok(Some(chunk))
            }
            None if stream.remote_fin && stream.unread == 0 => Ok(Some(Bytes::new())),
            None => Ok(None),
        }
    }

    /// Half-closes our direction (FIN). Idempotent. The stream's state is
    /// freed once the remote finished too and everything was read.
    pub fn finish(&mut self, id: StreamId) -> Result<(), StreamError> {
        self.check_open()?;
        let Some(stream) = self.streams.get_mut(&id) else {
            return Err(self.missing(id));
        };
        queue_fin(id, stream, &mut self.out);
        self.remove_if_done(id);
        Ok(())
    }

    /// Resets the stream (RST) and frees its state. Resetting a stream that
    /// is already gone is not an error.
    pub fn reset(&mut self, id: StreamId) -> Result<(), StreamError> {
        if let Some(e) = &self.closed {
            return Err(StreamError::Connection(e.clone()));
        }
        let Some(mut stream) = self.streams.remove(&id) else {
            return Ok(());
        };
        let flags = stream.take_flag();
        // A stream whose SYN never left needs no RST: the remote never saw it.
        if !flags.contains(Flags::SYN) {
            Header::window_update(flags | Flags::RST, id, 0).encode(&mut self.out);
        }
        self.forget(id, &stream, Ended::ResetLocal);
        Ok(())
    }

    /// The application dropped its handle to the stream (what dropping a
    /// [`Stream`](crate::Stream) does). Follows TCP's close (RFC 1122
    /// 4.2.2.13), so a writer never mistakes lost bytes for a clean end:
    ///
    /// * If received bytes were never read, the stream is reset (RST): the
    ///   remote's reads and writes fail instead of its peer seeing a clean
    ///   end-of-stream after a truncated prefix.
    /// * Otherwise a write side still open is finished (FIN), so bytes
    ///   written before still reach the remote, and the stream waits for the
    ///   remote's FIN. Data arriving after the drop resets the stream (RST):
    ///   nobody will read it, and the writer must learn that.
    /// * The state is freed on the remote's FIN or RST (at once if it
    ///   already finished) or on that reset. Until then the stream counts
    ///   toward [`Config::max_concurrent_streams`]. No more events are raised
    ///   for it.
    /// * A stream the remote never heard of (nothing sent yet, its SYN still
    ///   owed) is freed silently.
    ///
    /// The pattern "write, [`finish`](Self::finish), read the reply to its
    /// end, drop" thus delivers everything both ways. Later calls with `id`
    /// fail as for an unknown stream. Unknown ids and a closed connection are
    /// ignored.
    pub fn drop_stream(&mut self, id: StreamId) {
        if self.closed.is_some() {
            // A stream kept for its unread data after a graceful close.
            self.streams.remove(&id);
            return;
        }
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if stream.pending_flag.contains(Flags::SYN) {
            if let Some(stream) = self.streams.remove(&id) {
                self.forget(id, &stream, Ended::ResetLocal);
            }
            return;
        }
        if stream.unread > 0 {
            tracing::debug!(stream = %id, unread = stream.unread, "dropped with unread data: reset");
            let _ = self.reset(id);
            return;
        }
        stream.mark_dropped();
        queue_fin(id, stream, &mut self.out);
        self.remove_if_done(id);
    }

    /// Starts closing the connection: sends GoAway(normal), after which
    /// inbound SYNs are refused with RST and `open_stream` fails; existing
    /// streams go on. The connection ends ([`ConnectionError::Closed`]) as
    /// soon as no stream is left (at once if none is), or when
    /// [`Config::close_timeout`] has passed, resetting the streams left. A
    /// remote that receives our GoAway answers with its own once its streams
    /// ended, so both ends close within one round trip after the last
    /// stream. Idempotent.
    pub fn go_away(&mut self, now: Instant) {
        if self.closed.is_some() || self.local_go_away {
            return;
        }
        self.now = now;
        self.local_go_away = true;
        self.close_deadline = Some(now + self.config.close_timeout());
        // Streams opened before the GoAway are announced before it, so the
        // remote does not take the GoAway for the end of everything.
        self.encode_owed_flags();
        Header::go_away(GoAwayCode::Normal).encode(&mut self.out);
        self.check_graceful_close();
    }

    // ----- inputs besides bytes -----

    /// Advances timers: sends keep-alive pings, closes the connection when
    /// one went unanswered, and ends a closing connection whose streams
    /// outlived [`Config::close_timeout`] (resetting them).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.closed.is_some() {
            return;
        }
        if self.close_deadline.is_some_and(|t| now >= t) {
            tracing::debug!(
                streams = self.streams.len(),
                "close timeout: resetting streams"
            );
            let ids: Vec<StreamId> = self.streams.keys().copied().collect();
            for id in ids {
                let _ = self.reset(id);
            }
            // The last reset closed the connection (see check_graceful_close).
            return;
        }
        if let Some((_, sent)) = self.pinger.outstanding {
            if self.config.keepalive_interval().is_some() {
                let timeout = self.config.keepalive_timeout();
                if now.saturating_duration_since(sent) >= timeout {
                    self.fail(ConnectionError::KeepAliveTimeout(timeout));
                }
            }
        } else if self.pinger.next_ping.is_some_and(|t| now >= t) {
            self.pinger.next_ping = None;
            self.send_ping(now);
        }
    }

    /// The transport reached end-of-file. Graceful if a GoAway was sent or
    /// received and every stream left was finished both ways (only unread
    /// data remains, and stays readable); otherwise
    /// [`ConnectionError::TransportClosed`].
    pub fn handle_transport_closed(&mut self) {
        if self.closed.is_some() {
            return;
        }
        let graceful = (self.local_go_away || self.remote_go_away)
            && self.streams.values().all(|s| s.remote_fin && s.local_fin);
        // The remote stopped writing, not necessarily reading: what is
        // queued (our GoAway) may still go out.
        self.fail(if graceful {
            ConnectionError::Closed
        } else {
            ConnectionError::TransportClosed
        });
    }

    /// The transport failed; the connection closes with
    /// [`ConnectionError::Io`].
    pub fn handle_transport_error(&mut self, error: std::io::Error) {
        if self.closed.is_none() {
            self.out.clear();
            self.fail(error.into());
        }
    }

    // ----- outputs -----

    /// Moves all encoded frames into `buf` (a buffer swap when `buf` is
    /// empty, so no copy) and returns how many bytes were added.
    pub fn poll_transmit(&mut self, buf: &mut BytesMut) -> usize {
        self.encode_owed_flags();
        self.budget.transmitted();
        let n = self.out.len();
        if n > 0 {
            if buf.is_empty() {
                std::mem::swap(buf, &mut self.out);
            } else {
                buf.extend_from_slice(&self.out);
                self.out.clear();
            }
        }
        for id in std::mem::take(&mut self.waiting_room) {
            if let Some(s) = self.streams.get_mut(&id)
                && s.write_blocked
                && s.send_credit > 0
            {
                s.write_blocked = false;
                self.events.push_back(Event::Writable(id));
            }
        }
        n
    }

    /// Encodes the SYNs and ACKs still owed (streams opened or accepted
    /// that sent nothing yet).
    fn encode_owed_flags(&mut self) {
        for id in std::mem::take(&mut self.flag_pending) {
            if let Some(s) = self.streams.get_mut(&id) {
                let flags = s.take_flag();
                if !flags.is_empty() {
                    Header::window_update(flags, id, 0).encode(&mut self.out);
                }
            }
        }
    }

    /// Whether `poll_transmit` has something to hand out.
    pub fn has_transmit(&self) -> bool {
        !self.out.is_empty() || !self.flag_pending.is_empty()
    }

    /// Whether the driver should read more from the transport. `false` while
    /// more RSTs for refused streams than
    /// [`Config::max_pending_control_frames`] wait for
    /// [`poll_transmit`](Self::poll_transmit): a peer opening streams faster
    /// than it reads our refusals is slowed down, not disconnected. (Input is
    /// still consumed whole when given, so one read can overshoot by what it
    /// holds.)
    pub fn wants_input(&self) -> bool {
        self.budget.pending_refusals <= self.budget.max_pending
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        let ping = match self.pinger.outstanding {
            Some((_, sent)) => self
                .config
                .keepalive_interval()
                .map(|_| sent + self.config.keepalive_timeout()),
            None => self.pinger.next_ping,
        };
        match (ping, self.close_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ----- introspection -----

    /// Live streams (including inbound ones not yet accepted; after a
    /// graceful close, those kept until their unread data is read).
    pub fn num_streams(&self) -> usize {
        self.streams.len()
    }

    /// Inbound streams waiting for `accept_stream`.
    pub fn pending_accept(&self) -> usize {
        self.accept_queue.len()
    }

    /// The current receive window of a live stream.
    pub fn stream_receive_window(&self, id: StreamId) -> Option<u32> {
        self.streams.get(&id).map(|s| s.recv_window)
    }

    /// Bytes received (or announced) on a live stream and not yet read.
    pub fn stream_unread(&self, id: StreamId) -> Option<u32> {
        self.streams.get(&id).map(|s| s.unread)
    }

    /// Send credit left on a live stream.
    pub fn stream_send_window(&self, id: StreamId) -> Option<u32> {
        self.streams.get(&id).map(|s| s.send_credit)
    }

    /// Whether the stream is live in the core.
    pub fn contains_stream(&self, id: StreamId) -> bool {
        self.streams.contains_key(&id)
    }

    /// The last measured round-trip time.
    pub fn rtt(&self) -> Option<Duration> {
        self.pinger.rtt
    }

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<&ConnectionError> {
        self.closed.as_ref()
    }

    /// Whether the remote sent GoAway: no inbound stream will come after
    /// those already queued for [`accept_stream`](Self::accept_stream).
    pub fn go_away_received(&self) -> bool {
        self.remote_go_away
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Our role.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    // ----- internals shared with `inbound` -----

    fn check_open(&self) -> Result<(), StreamError> {
        match &self.closed {
            Some(e) => Err(StreamError::Connection(e.clone())),
            None => Ok(()),
        }
    }

    /// Reads fail once the connection failed; after a graceful close, data
    /// that arrived stays readable.
    fn check_readable(&self) -> Result<(), StreamError> {
        match &self.closed {
            Some(e) if !e.is_graceful() => Err(StreamError::Connection(e.clone())),
            _ => Ok(()),
        }
    }

    /// A read of an id not in the map: `Ok` (end of stream) if it finished,
    /// even if the connection closed right after (its last stream ending is
    /// what closes a connection after GoAway).
    fn read_missing(&self, id: StreamId) -> Result<(), StreamError> {
        if self.ended(id) == Some(Ended::Finished) {
            return Ok(());
        }
        if let Some(e) = &self.closed {
            return Err(StreamError::Connection(e.clone()));
        }
        Err(self.missing(id))
    }

    /// The error for an id that is not in the stream map.
    fn missing(&self, id: StreamId) -> StreamError {
        match self
            .recently_closed
            .get(id)
            .or(self.recently_refused.get(id))
        {
            Some(Ended::ResetRemote) => StreamError::Reset(Blame::Remote),
            Some(Ended::ResetLocal) => StreamError::Reset(Blame::Local),
            Some(Ended::Finished) | None => StreamError::UnknownStream(id),
        }
    }

    fn ended(&self, id: StreamId) -> Option<Ended> {
        self.recently_closed.get(id)
    }

    /// Grants credit in batches (at least half a window) after a read, and
    /// grows the window when the reader keeps up with the link.
    fn after_read(&mut self, id: StreamId, now: Instant) {
        let max_window = self.config.max_stream_window();
        let max_total = self.config.max_connection_window();
        let rtt = self.pinger.rtt.map(|rtt| rtt.max(AUTOTUNE_MIN_RTT));
        if self.closed.is_some() {
            // Kept after a graceful close for its unread data: freed once
            // read, the next read returning the end of stream.
            if self.streams.get(&id).is_some_and(|s| s.unread == 0) {
                self.streams.remove(&id);
                self.recently_closed.insert(id, Ended::Finished);
            }
            return;
        }
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if !s.remote_fin && s.grantable() >= s.recv_window / 2 {
            let fast = rtt.is_some_and(|rtt| {
                now.saturating_duration_since(s.last_update) < rtt * AUTOTUNE_RTT_FACTOR
            });
            if fast && s.recv_window < max_window {
                let grown = s.recv_window.saturating_mul(2).min(max_window);
                let extra = u64::from(grown - s.recv_window);
                if self.total_window + extra <= max_total {
                    tracing::trace!(stream = %id, window = grown, "auto-tuned receive window");
                    self.total_window += extra;
                    s.recv_window = grown;
                }
            }
            let grant = s.grantable();
            let flags = s.take_flag();
            s.recv_credit += grant;
            s.last_update = now;
            Header::window_update(flags, id, grant).encode(&mut self.out);
        }
        self.remove_if_done(id);
    }

    fn remove_if_done(&mut self, id: StreamId) {
        if self.streams.get(&id).is_some_and(StreamState::is_done)
            && let Some(s) = self.streams.remove(&id)
        {
            self.forget(id, &s, Ended::Finished);
        }
    }

    /// Bookkeeping after a stream left the map.
    fn forget(&mut self, id: StreamId, stream: &StreamState, how: Ended) {
        self.total_window = self
            .total_window
            .saturating_sub(u64::from(stream.recv_window));
        self.recently_closed.insert(id, how);
        self.check_graceful_close();
    }

    /// Ends the connection once a GoAway was sent or received and no
    /// stream is left. A remote's GoAway is answered with ours: with no
    /// stream left and none allowed, the connection has nothing more to do.
    fn check_graceful_close(&mut self) {
        if self.closed.is_some() || !self.streams.is_empty() {
            return;
        }
        if self.remote_go_away && !self.local_go_away {
            self.local_go_away = true;
            Header::go_away(GoAwayCode::Normal).encode(&mut self.out);
        }
        if self.local_go_away {
            self.fail(ConnectionError::Closed);
        }
    }

    fn send_ping(&mut self, now: Instant) {
        let opaque = self.pinger.next_opaque;
        self.pinger.next_opaque = opaque.wrapping_add(1);
        self.pinger.outstanding = Some((opaque, now));
        Header::ping(Flags::SYN, opaque).encode(&mut self.out);
    }

    /// Closes the connection with `error`, sending its GoAway code first.
    fn fail(&mut self, error: ConnectionError) {
        if self.closed.is_some() {
            return;
        }
        match error.go_away_code() {
            Some(GoAwayCode::Normal) | None => {}
            Some(code) => Header::go_away(code).encode(&mut self.out),
        }
        if error.is_graceful() {
            tracing::debug!("yamux connection closed gracefully");
        } else {
            tracing::debug!(%error, "yamux connection closed");
        }
        if error.is_graceful() {
            // A graceful close loses nothing that arrived: streams finished
            // both ways keep their unread data for the application.
            self.streams
                .retain(|_, s| s.remote_fin && s.local_fin && s.unread > 0 && !s.dropped);
        } else {
            self.streams.clear();
        }
        self.accept_queue.clear();
        self.flag_pending.clear();
        self.waiting_room.clear();
        self.body = None;
        self.closed = Some(error.clone());
        self.events.push_back(Event::Closed(error));
    }
}

/// Half-closes our direction of `stream` (FIN, carrying any owed SYN/ACK).
/// Idempotent.
fn queue_fin(id: StreamId, stream: &mut StreamState, out: &mut BytesMut) {
    if stream.local_fin {
        return;
    }
    stream.local_fin = true;
    stream.write_blocked = false;
    let flags = stream.take_flag() | Flags::FIN;
    Header::window_update(flags, id, 0).encode(out);
}
