//! The sans-IO handshake core.
//!
//! Each role is a closed enum of consuming states named for what they wait
//! for. Feed every received message body (without its length prefix) to
//! `handle`; it returns the next state and the body to send, or the final
//! [`HandshakeOutcome`]. Nothing here touches sockets or clocks: the caller
//! owns framing ([`crate::frame`]), I/O and the time limit.
//!
//! ```text
//! initiator                                              responder
//! InitiatorHandshake::start ── Hello ──────────────────▶ ResponderHandshake::new
//! AwaitingResponderHello                                 AwaitingInitiatorHello
//!           ◀──────── SuiteRefused (at most once) ─────  └▶ AwaitingRetriedInitiatorHello
//! AwaitingRetriedResponderHello ── Hello ─────────────▶
//!           ◀──────── Accept (noise message 2) ───────── AwaitingInitiatorFinal
//! Complete ─────────── Final (noise message 3) ────────▶ Complete
//! ```
//!
//! Calling order, initiator: [`InitiatorHandshake::start`], send its
//! message, then for each received body [`InitiatorHandshake::handle`] and
//! send what it returns, until [`InitiatorStep::Complete`]. Responder:
//! [`ResponderHandshake::new`], then for each received body
//! [`ResponderHandshake::handle`], sending what it returns, until
//! [`ResponderStep::Complete`] (or [`ResponderStep::Refuse`]: send, close).

mod initiator;
pub mod messages;
mod responder;
#[cfg(test)]
mod tests;

use std::fmt;

use shoal_identity::{PeerId, PublicKey};
use snow::{HandshakeState, TransportState};

pub use initiator::{
    AwaitingResponderHello, AwaitingRetriedResponderHello, InitiatorHandshake, InitiatorStep,
};
pub use responder::{
    AwaitingInitiatorFinal, AwaitingInitiatorHello, AwaitingRetriedInitiatorHello,
    ResponderHandshake, ResponderStep,
};

use crate::{Config, HandshakeError, ReceiveBudget, payload::HandshakePayload, suite::CipherSuite};

/// The fixed start of every Noise prologue.
pub const PROLOGUE_TAG: &[u8] = b"shoal-secio/1";

/// Room for the Noise tokens of messages 2 and 3 around the payload: an
/// ephemeral key, an encrypted static key with its tag and the payload's
/// tag.
const NOISE_OVERHEAD: usize = 32 + 32 + 16 + 16;

/// What a completed handshake yields: the transport keys, the remote's
/// authenticated identity and the suite in use.
pub struct HandshakeOutcome {
    transport: Box<TransportState>,
    remote: PublicKey,
    suite: CipherSuite,
    budget: ReceiveBudget,
}

impl HandshakeOutcome {
    /// The remote's authenticated identity key.
    pub fn remote_public_key(&self) -> PublicKey {
        self.remote
    }

    /// The remote's peer id.
    pub fn remote_peer(&self) -> PeerId {
        self.remote.peer_id()
    }

    /// The negotiated cipher suite.
    pub fn cipher_suite(&self) -> CipherSuite {
        self.suite
    }

    /// The receive budget of the configuration that made this handshake;
    /// a [`SecureStream`](crate::SecureStream) built from the outcome draws
    /// on it.
    pub fn receive_budget(&self) -> &ReceiveBudget {
        &self.budget
    }

    /// The Noise transport state (both directions' keys and nonces).
    pub fn into_transport(self) -> TransportState {
        *self.transport
    }
}

impl fmt::Debug for HandshakeOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandshakeOutcome")
            .field("remote", &self.remote.peer_id())
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

/// Builds the Noise state for `suite` with the local static key.
fn build_noise(
    config: &Config,
    suite: CipherSuite,
    prologue: &[u8],
    initiator: bool,
) -> Result<Box<HandshakeState>, snow::Error> {
    let builder = snow::Builder::new(suite.noise_params()?)
        .local_private_key(&config.local().static_secret[..])?
        .prologue(prologue)?;
    // Boxed: the state is large and moves through every step.
    if initiator {
        builder.build_initiator().map(Box::new)
    } else {
        builder.build_responder().map(Box::new)
    }
}

/// Rejects a received body over the configured limit (the driver already
/// checks declared lengths; this keeps the core safe on its own).
fn check_size(config: &Config, body: &[u8]) -> Result<(), HandshakeError> {
    let max = config.max_handshake_message();
    if body.len() > max {
        return Err(HandshakeError::MessageTooLarge {
            len: body.len(),
            max,
        });
    }
    Ok(())
}

/// Reads a Noise message carrying the remote static key and its payload,
/// returning the authenticated identity.
fn read_authenticated(
    noise: &mut HandshakeState,
    message: &[u8],
) -> Result<PublicKey, HandshakeError> {
    let mut payload = vec![0u8; message.len()];
    let len = noise.read_message(message, &mut payload)?;
    let payload = payload
        .get(..len)
        .ok_or(HandshakeError::Malformed("noise payload length"))?;
    let remote_static = noise
        .get_remote_static()
        .ok_or(HandshakeError::ProtocolViolation("no remote static key"))?;
    HandshakePayload::verify_bytes(payload, remote_static)
}

/// Writes a Noise message carrying our static key and payload after
/// `prefix` bytes.
fn write_authenticated(
    config: &Config,
    noise: &mut HandshakeState,
    prefix: &[u8],
) -> Result<Vec<u8>, HandshakeError> {
    let payload = &config.local().payload;
    let mut out = vec![0u8; prefix.len() + payload.len() + NOISE_OVERHEAD];
    out[..prefix.len()].copy_from_slice(prefix);
    let len = noise.write_message(payload, &mut out[prefix.len()..])?;
    out.truncate(prefix.len() + len);
    Ok(out)
}

/// Fails with [`HandshakeError::PeerIdMismatch`] if `remote` is not `expected`.
fn check_expected(expected: Option<PeerId>, remote: &PublicKey) -> Result<(), HandshakeError> {
    match expected {
        Some(expected) if expected != remote.peer_id() => Err(HandshakeError::PeerIdMismatch {
            expected,
            actual: remote.peer_id(),
        }),
        _ => Ok(()),
    }
}

/// Ends the handshake.
fn complete(
    config: &Config,
    noise: Box<HandshakeState>,
    remote: PublicKey,
    suite: CipherSuite,
) -> Result<HandshakeOutcome, HandshakeError> {
    let transport = Box::new((*noise).into_transport_mode()?);
    tracing::debug!(remote = %remote.peer_id(), %suite, "secio handshake complete");
    Ok(HandshakeOutcome {
        transport,
        remote,
        suite,
        budget: config.receive_budget().clone(),
    })
}
