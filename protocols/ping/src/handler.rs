//! The per-session ping handler: one instance per session, so its timers and
//! counters die with the session's ping substream.

use std::sync::Arc;

use shoal::{HandlerResult, ProtocolContextMut, SendError, SessionProtocol};
use tokio::time::Instant;

use crate::{ABUSE_FACTOR, Event, PingMessage, Shared};

/// Timer: time to send the next ping.
const TICK: u64 = 1;
/// Timer: the outstanding ping's answer is due.
const DEADLINE: u64 = 2;

/// Why the ping substream of a session is closed by us.
#[derive(Debug, thiserror::Error)]
enum PingError {
    /// More than `ABUSE_FACTOR × max_pings_per_interval` messages arrived in
    /// one interval.
    #[error("peer sent {0} ping messages in one interval")]
    Flood(u32),
}

/// Ping state of one session.
pub(crate) struct PingSession {
    shared: Arc<Shared>,
    next_nonce: u64,
    /// Nonce and send time of the ping awaiting its pong.
    outstanding: Option<(u64, Instant)>,
    /// Start of the current rate-limiting window.
    window_start: Instant,
    /// Messages received in the window.
    received: u32,
    /// Pings answered in the window.
    answered: u32,
}

impl PingSession {
    pub(crate) fn new(shared: Arc<Shared>) -> PingSession {
        PingSession {
            shared,
            next_nonce: 1,
            outstanding: None,
            window_start: Instant::now(),
            received: 0,
            answered: 0,
        }
    }

    fn send_ping(&mut self, ctx: &mut ProtocolContextMut<'_>) -> HandlerResult {
        if self.outstanding.is_some() {
            return Ok(());
        }
        let nonce = self.next_nonce;
        self.next_nonce = self.next_nonce.wrapping_add(1);
        match ctx.reply(PingMessage::Ping(nonce).encode()) {
            // A full send queue means the peer is not reading: count the ping
            // as sent, so the timeout catches a peer that stopped reading.
            Ok(()) | Err(SendError::QueueFull(_)) => {}
            // The substream or session is closing; nothing to measure.
            Err(_) => return Ok(()),
        }
        self.outstanding = Some((nonce, Instant::now()));
        ctx.set_notify(self.shared.config.timeout, DEADLINE)?;
        Ok(())
    }

    /// Counts a received message; `Ok(true)` if a ping may be answered.
    fn admit(&mut self, is_ping: bool) -> Result<bool, PingError> {
        let config = &self.shared.config;
        let now = Instant::now();
        if now.duration_since(self.window_start) >= config.interval {
            self.window_start = now;
            self.received = 0;
            self.answered = 0;
        }
        self.received = self.received.saturating_add(1);
        let flood = config
            .max_pings_per_interval
            .max(1)
            .saturating_mul(ABUSE_FACTOR);
        if self.received > flood {
            return Err(PingError::Flood(self.received));
        }
        if is_ping && self.answered < config.max_pings_per_interval {
            self.answered += 1;
            return Ok(true);
        }
        Ok(false)
    }
}

impl SessionProtocol for PingSession {
    fn connected(&mut self, ctx: &mut ProtocolContextMut<'_>, _version: u32) -> HandlerResult {
        ctx.set_notify(self.shared.config.interval, TICK)?;
        self.send_ping(ctx)
    }

    fn disconnected(&mut self, ctx: &mut ProtocolContextMut<'_>) -> HandlerResult {
        self.shared.forget(ctx.session().id);
        Ok(())
    }

    fn received(&mut self, ctx: &mut ProtocolContextMut<'_>, data: bytes::Bytes) -> HandlerResult {
        let message = PingMessage::decode(&data)?;
        match message {
            PingMessage::Ping(nonce) => {
                if self.admit(true)? {
                    // A full queue drops this pong; the peer's own timeout
                    // decides what that means.
                    if let Err(e) = ctx.reply(PingMessage::Pong(nonce).encode()) {
                        tracing::debug!(error = %e, "pong not queued");
                    }
                } else {
                    tracing::debug!(session = %ctx.session().id, "ping over the rate limit ignored");
                }
            }
            PingMessage::Pong(nonce) => {
                self.admit(false)?;
                // Only the pong of the outstanding ping counts; any other is
                // ignored and never closes anything.
                if let Some((expected, sent)) = self.outstanding
                    && expected == nonce
                {
                    self.outstanding = None;
                    ctx.remove_notify(DEADLINE);
                    let rtt = sent.elapsed();
                    let session = ctx.session();
                    self.shared.set_rtt(session.id, session.peer, rtt);
                    self.shared.emit(Event::Pong {
                        peer: session.peer,
                        session: session.id,
                        rtt,
                    });
                }
            }
        }
        Ok(())
    }

    fn notify(&mut self, ctx: &mut ProtocolContextMut<'_>, token: u64) -> HandlerResult {
        match token {
            TICK => self.send_ping(ctx),
            DEADLINE => {
                ctx.remove_notify(DEADLINE);
                let timeout = self.shared.config.timeout;
                let Some((_, sent)) = self.outstanding else {
                    return Ok(());
                };
                if sent.elapsed() < timeout {
                    return Ok(());
                }
                let session = ctx.session().clone();
                tracing::debug!(session = %session.id, peer = %session.peer, "ping timeout; closing the session");
                self.outstanding = None;
                ctx.remove_notify(TICK);
                self.shared.forget(session.id);
                self.shared.emit(Event::Timeout {
                    peer: session.peer,
                    session: session.id,
                    timeout,
                });
                // The session may already be closing; either way it goes.
                let _ = ctx.disconnect_session();
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
