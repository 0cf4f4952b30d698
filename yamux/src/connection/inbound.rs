//! Inbound bytes: header reassembly, body streaming and per-type frame rules.

use std::time::Instant;

use bytes::BytesMut;

use super::limits::Ended;
use super::stream_state::StreamState;
use super::{Body, Connection, Event};
use crate::StreamId;
use crate::config::INITIAL_WINDOW;
use crate::error::{ConnectionError, ProtocolViolation};
use crate::frame::{Flags, FrameType, GoAwayCode, HEADER_LEN, Header};

impl Connection {
    /// Consumes all of `input` (bytes read from the transport, in any
    /// chunking). Data payloads are copied into their stream's receive
    /// buffer, so `input` can be reused for the next read.
    ///
    /// On `Err` the connection is closed: the GoAway frame for the error is
    /// queued for [`poll_transmit`](Connection::poll_transmit) and an
    /// [`Event::Closed`] is queued too.
    pub fn handle_input(
        &mut self,
        input: &mut BytesMut,
        now: Instant,
    ) -> Result<(), ConnectionError> {
        let result = self.handle_bytes(input, now);
        input.clear();
        result
    }

    /// Like [`handle_input`](Connection::handle_input) for a borrowed slice:
    /// consumes all of `input`, copying payloads into their streams.
    pub fn handle_bytes(&mut self, mut input: &[u8], now: Instant) -> Result<(), ConnectionError> {
        self.now = now;
        while !input.is_empty() {
            if let Some(e) = &self.closed {
                return if e.is_graceful() {
                    Ok(())
                } else {
                    Err(e.clone())
                };
            }
            match self.step(input, now) {
                Ok(used) => input = &input[used..],
                Err(e) => {
                    self.fail(e.clone());
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Handles the start of `input`; returns how many bytes it used.
    fn step(&mut self, input: &[u8], now: Instant) -> Result<usize, ConnectionError> {
        if let Some(body) = &mut self.body {
            let take = input.len().min(body.remaining as usize);
            let chunk = &input[..take];
            // take <= remaining, a u32.
            body.remaining -= take as u32;
            let (target, done, fin) = (body.target, body.remaining == 0, body.fin);
            if done {
                self.body = None;
            }
            if let Some(id) = target {
                self.deliver(id, chunk);
                if done && fin {
                    self.on_remote_fin(id);
                }
            }
            return Ok(take);
        }
        let max_data = self.config.max_stream_window();
        let (header, used) = if self.header_len == 0 && input.len() >= HEADER_LEN {
            (Header::decode(&input[..HEADER_LEN], max_data)?, HEADER_LEN)
        } else {
            let take = input.len().min(HEADER_LEN - self.header_len);
            self.header_buf[self.header_len..self.header_len + take]
                .copy_from_slice(&input[..take]);
            self.header_len += take;
            if self.header_len < HEADER_LEN {
                return Ok(take);
            }
            self.header_len = 0;
            (Header::decode(&self.header_buf, max_data)?, take)
        };
        tracing::trace!(?header, "yamux frame received");
        match header.frame_type {
            FrameType::Data => self.on_data(header, now),
            FrameType::WindowUpdate => self.on_window_update(header, now),
            FrameType::Ping => self.on_ping(header, now),
            FrameType::GoAway => self.on_go_away(header, now),
        }?;
        Ok(used)
    }

    fn deliver(&mut self, id: StreamId, chunk: &[u8]) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.dropped {
            return;
        }
        s.push(chunk);
        if s.notify_readable {
            s.notify_readable = false;
            self.events.push_back(Event::Readable(id));
        }
    }

    fn on_data(&mut self, h: Header, now: Instant) -> Result<(), ConnectionError> {
        let id = h.stream_id;
        if id == StreamId::CONNECTION {
            return Err(ProtocolViolation::SessionIdForStream.into());
        }
        let discard = |len: u32| Body {
            target: None,
            remaining: len,
            fin: false,
        };
        if h.flags.contains(Flags::RST) {
            self.on_remote_reset(id);
            self.body = (h.length > 0).then(|| discard(h.length));
            return Ok(());
        }
        if h.flags.contains(Flags::SYN) && !self.open_inbound(id, INITIAL_WINDOW, now)? {
            self.body = (h.length > 0).then(|| discard(h.length));
            return Ok(());
        }
        if h.length == 0 && h.flags.is_empty() {
            self.count_control(now, false)?;
        }
        let fin = h.flags.contains(Flags::FIN);
        let target = match self.streams.get_mut(&id) {
            Some(s) => {
                if s.remote_fin && h.length > 0 {
                    return Err(ProtocolViolation::DataAfterFin { id }.into());
                }
                if h.length > s.recv_credit {
                    return Err(ProtocolViolation::WindowExceeded {
                        id,
                        len: h.length,
                        credit: s.recv_credit,
                    }
                    .into());
                }
                s.recv_credit -= h.length;
                if s.dropped && h.length > 0 {
                    // Nobody will read it: abort, so the writer learns.
                    tracing::debug!(stream = %id, "data for a dropped stream: reset");
                    let _ = self.reset(id);
                    self.body = Some(discard(h.length));
                    return Ok(());
                }
                s.unread += h.length;
                Some(id)
            }
            None => {
                self.check_known(id)?;
                None
            }
        };
        if h.length > 0 {
            self.body = Some(Body {
                target,
                remaining: h.length,
                fin,
            });
        } else if fin && target.is_some() {
            self.on_remote_fin(id);
        }
        Ok(())
    }

    fn on_window_update(&mut self, h: Header, now: Instant) -> Result<(), ConnectionError> {
        let id = h.stream_id;
        if id == StreamId::CONNECTION {
            return Err(ProtocolViolation::SessionIdForStream.into());
        }
        if h.flags.contains(Flags::RST) {
            self.on_remote_reset(id);
            return Ok(());
        }
        if h.flags.contains(Flags::SYN) {
            let credit = INITIAL_WINDOW
                .checked_add(h.length)
                .ok_or(ProtocolViolation::WindowOverflow { id })?;
            if !self.open_inbound(id, credit, now)? {
                return Ok(());
            }
        } else if let Some(s) = self.streams.get_mut(&id) {
            s.send_credit = s
                .send_credit
                .checked_add(h.length)
                .ok_or(ProtocolViolation::WindowOverflow { id })?;
            if h.length > 0 && s.write_blocked && !s.local_fin {
                s.write_blocked = false;
                self.events.push_back(Event::Writable(id));
            }
        } else {
            self.check_known(id)?;
        }
        if h.length == 0 && h.flags.is_empty() {
            self.count_control(now, false)?;
        }
        if h.flags.contains(Flags::FIN) {
            self.on_remote_fin(id);
        }
        Ok(())
    }

    fn on_ping(&mut self, h: Header, now: Instant) -> Result<(), ConnectionError> {
        if h.flags.contains(Flags::ACK) {
            if let Some((opaque, sent)) = self.pinger.outstanding
                && opaque == h.length
            {
                let rtt = now.saturating_duration_since(sent);
                tracing::trace!(?rtt, "yamux pong");
                self.pinger.rtt = Some(rtt);
                self.pinger.outstanding = None;
                self.pinger.next_ping = self.config.keepalive_interval().map(|i| now + i);
            }
            return self.count_control(now, false);
        }
        self.count_control(now, true)?;
        Header::ping(Flags::ACK, h.length).encode(&mut self.out);
        Ok(())
    }

    fn on_go_away(&mut self, h: Header, now: Instant) -> Result<(), ConnectionError> {
        self.count_control(now, false)?;
        let code = GoAwayCode::from_u32(h.length);
        if !self.remote_go_away {
            self.remote_go_away = true;
            self.events.push_back(Event::GoAwayReceived(code));
        }
        if code != GoAwayCode::Normal {
            return Err(ConnectionError::RemoteGoAway(code));
        }
        self.check_graceful_close();
        Ok(())
    }

    fn count_control(&mut self, now: Instant, answered: bool) -> Result<(), ConnectionError> {
        self.budget
            .count(now, answered)
            .map_err(ConnectionError::ControlFlood)
    }

    /// Validates a remote SYN. `Ok(true)`: stream created and queued for
    /// accept; `Ok(false)`: refused with RST, the connection lives on.
    fn open_inbound(
        &mut self,
        id: StreamId,
        send_credit: u32,
        now: Instant,
    ) -> Result<bool, ConnectionError> {
        if !self.mode.is_remote_id(id) {
            return Err(ProtocolViolation::WrongParity { id }.into());
        }
        if self.streams.contains_key(&id)
            || self.recently_closed.get(id).is_some()
            || self.recently_refused.get(id).is_some()
        {
            return Err(ProtocolViolation::ReusedId { id }.into());
        }
        self.max_remote_id = self.max_remote_id.max(id.get());
        if self.accept_queue.len() >= self.config.max_pending_accept() {
            let streams = &self.streams;
            self.accept_queue.retain(|id| streams.contains_key(id));
        }
        let refuse = self.local_go_away
            || self.streams.len() >= self.config.max_concurrent_streams()
            || self.accept_queue.len() >= self.config.max_pending_accept();
        if refuse {
            // Our limit, our decision: not counted against the peer. The
            // queued RSTs are bounded through `wants_input` instead.
            tracing::debug!(stream = %id, "refusing inbound stream");
            self.budget.pending_refusals += 1;
            Header::window_update(Flags::RST, id, 0).encode(&mut self.out);
            self.recently_refused.insert(id, Ended::ResetLocal);
            return Ok(false);
        }
        self.streams
            .insert(id, StreamState::new(now, send_credit, Flags::NONE));
        self.total_window += u64::from(INITIAL_WINDOW);
        self.accept_queue.push_back(id);
        self.events.push_back(Event::InboundStream(id));
        Ok(true)
    }

    /// A frame for an id not in the map: fine if the stream existed (late
    /// frames after close), a protocol error if it was never opened.
    fn check_known(&self, id: StreamId) -> Result<(), ConnectionError> {
        let existed = if self.mode.is_remote_id(id) {
            id.get() <= self.max_remote_id
        } else {
            u64::from(id.get()) < self.next_local_id
        };
        if existed {
            Ok(())
        } else {
            Err(ProtocolViolation::NeverOpened { id }.into())
        }
    }

    fn on_remote_reset(&mut self, id: StreamId) {
        if let Some(s) = self.streams.remove(&id) {
            tracing::debug!(stream = %id, "stream reset by remote");
            if !s.dropped {
                self.events.push_back(Event::Reset(id));
            }
            self.forget(id, &s, Ended::ResetRemote);
        }
    }

    fn on_remote_fin(&mut self, id: StreamId) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if !s.remote_fin {
            s.remote_fin = true;
            if !s.dropped {
                self.events.push_back(Event::Finished(id));
            }
        }
        self.remove_if_done(id);
    }
}
