//! The listening side.

use shoal_identity::PeerId;
use snow::HandshakeState;

use super::{
    HandshakeOutcome, PROLOGUE_TAG, build_noise, check_expected, check_size, complete,
    messages::{
        Hello, NOISE_MESSAGE_1_LEN, PROTOCOL_VERSION, STATUS_ACCEPT, STATUS_SUITE_REFUSED,
        STATUS_VERSION_REFUSED, refusal,
    },
    read_authenticated, write_authenticated,
};
use crate::{Config, HandshakeError, suite::CipherSuite};

/// The responder's handshake, one variant per state.
pub enum ResponderHandshake {
    /// Waiting for the initiator's first hello.
    AwaitingInitiatorHello(AwaitingInitiatorHello),
    /// We refused the offered suite; waiting for the second (last) hello.
    AwaitingRetriedInitiatorHello(AwaitingRetriedInitiatorHello),
    /// Noise message 2 is out; waiting for message 3.
    AwaitingInitiatorFinal(AwaitingInitiatorFinal),
}

/// What the responder does after handling a message.
pub enum ResponderStep {
    /// Send `message`, then feed the next received body to `next`.
    Send {
        /// The next state.
        next: ResponderHandshake,
        /// The body to send.
        message: Vec<u8>,
    },
    /// Send `message` to tell the initiator why, then close: the handshake
    /// failed with `error`.
    Refuse {
        /// The body to send.
        message: Vec<u8>,
        /// The local view of the failure.
        error: HandshakeError,
    },
    /// The connection is secure.
    Complete(HandshakeOutcome),
}

/// Waiting for the initiator's first hello.
pub struct AwaitingInitiatorHello {
    config: Config,
    expected: Option<PeerId>,
}

/// Waiting for the retried hello after a suite refusal.
pub struct AwaitingRetriedInitiatorHello {
    config: Config,
    expected: Option<PeerId>,
    /// `PROLOGUE_TAG | hello1[0..2] | refusal body`.
    transcript: Vec<u8>,
}

/// Waiting for Noise message 3.
pub struct AwaitingInitiatorFinal {
    config: Config,
    expected: Option<PeerId>,
    suite: CipherSuite,
    noise: Box<HandshakeState>,
}

impl ResponderHandshake {
    /// A responder waiting for a hello. With `expected`, the handshake fails
    /// with [`HandshakeError::PeerIdMismatch`] if the initiator is someone
    /// else.
    pub fn new(config: &Config, expected: Option<PeerId>) -> ResponderHandshake {
        ResponderHandshake::AwaitingInitiatorHello(AwaitingInitiatorHello {
            config: config.clone(),
            expected,
        })
    }

    /// Handles the next received message body.
    pub fn handle(self, body: &[u8]) -> Result<ResponderStep, HandshakeError> {
        match self {
            ResponderHandshake::AwaitingInitiatorHello(state) => state.handle(body),
            ResponderHandshake::AwaitingRetriedInitiatorHello(state) => state.handle(body),
            ResponderHandshake::AwaitingInitiatorFinal(state) => state.handle(body),
        }
    }
}

impl AwaitingInitiatorHello {
    /// Handles the first hello: accept, refuse the suite (once) or refuse
    /// the version.
    pub fn handle(self, body: &[u8]) -> Result<ResponderStep, HandshakeError> {
        check_size(&self.config, body)?;
        let hello = Hello::parse(body)?;
        if let Some(step) = refuse_version(&hello) {
            return Ok(step);
        }
        let offered = CipherSuite::from_id(hello.suite);
        match offered.filter(|s| self.config.suites().contains(s)) {
            Some(suite) => {
                let mut prologue = PROLOGUE_TAG.to_vec();
                prologue.extend_from_slice(&hello.header);
                accept(self.config, self.expected, suite, &prologue, &hello)
            }
            None => {
                let ids: Vec<u8> = self.config.suites().iter().map(|s| s.id()).collect();
                let message = refusal(STATUS_SUITE_REFUSED, &ids);
                tracing::debug!(offered = hello.suite, "secio: refusing cipher suite");
                let mut transcript = PROLOGUE_TAG.to_vec();
                transcript.extend_from_slice(&hello.header);
                transcript.extend_from_slice(&message);
                Ok(ResponderStep::Send {
                    next: ResponderHandshake::AwaitingRetriedInitiatorHello(
                        AwaitingRetriedInitiatorHello {
                            config: self.config,
                            expected: self.expected,
                            transcript,
                        },
                    ),
                    message,
                })
            }
        }
    }
}

impl AwaitingRetriedInitiatorHello {
    /// Handles the retried hello, which must offer a suite we listed.
    pub fn handle(mut self, body: &[u8]) -> Result<ResponderStep, HandshakeError> {
        check_size(&self.config, body)?;
        let hello = Hello::parse(body)?;
        if let Some(step) = refuse_version(&hello) {
            return Ok(step);
        }
        let Some(suite) =
            CipherSuite::from_id(hello.suite).filter(|s| self.config.suites().contains(s))
        else {
            return Err(HandshakeError::ProtocolViolation(
                "retried hello offers a suite we did not list",
            ));
        };
        self.transcript.extend_from_slice(&hello.header);
        accept(self.config, self.expected, suite, &self.transcript, &hello)
    }
}

impl AwaitingInitiatorFinal {
    /// Handles Noise message 3: authenticates the initiator.
    pub fn handle(mut self, body: &[u8]) -> Result<ResponderStep, HandshakeError> {
        check_size(&self.config, body)?;
        let remote = read_authenticated(&mut self.noise, body)?;
        check_expected(self.expected, &remote)?;
        Ok(ResponderStep::Complete(complete(
            &self.config,
            self.noise,
            remote,
            self.suite,
        )?))
    }
}

/// The version refusal for a hello of another version, if it is one.
fn refuse_version(hello: &Hello<'_>) -> Option<ResponderStep> {
    (hello.version != PROTOCOL_VERSION).then(|| {
        tracing::debug!(version = hello.version, "secio: refusing protocol version");
        ResponderStep::Refuse {
            message: refusal(STATUS_VERSION_REFUSED, &[PROTOCOL_VERSION]),
            error: HandshakeError::UnsupportedVersion(hello.version),
        }
    })
}

/// Reads Noise message 1 under `prologue` and writes message 2.
fn accept(
    config: Config,
    expected: Option<PeerId>,
    suite: CipherSuite,
    prologue: &[u8],
    hello: &Hello<'_>,
) -> Result<ResponderStep, HandshakeError> {
    if hello.noise.len() != NOISE_MESSAGE_1_LEN {
        return Err(HandshakeError::Malformed("hello has the wrong length"));
    }
    let mut noise = build_noise(&config, suite, prologue, false)?;
    noise.read_message(hello.noise, &mut [])?;
    let message = write_authenticated(&config, &mut noise, &[STATUS_ACCEPT])?;
    tracing::trace!(%suite, "secio: accepted hello");
    Ok(ResponderStep::Send {
        next: ResponderHandshake::AwaitingInitiatorFinal(AwaitingInitiatorFinal {
            config,
            expected,
            suite,
            noise,
        }),
        message,
    })
}
