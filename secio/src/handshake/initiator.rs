//! The dialing side.

use shoal_identity::PeerId;
use snow::HandshakeState;

use super::{
    HandshakeOutcome, PROLOGUE_TAG, build_noise, check_expected, check_size, complete,
    messages::{HELLO_HEADER_LEN, NOISE_MESSAGE_1_LEN, Response, hello_header},
    read_authenticated, write_authenticated,
};
use crate::{Config, HandshakeError, frame::TAG_LEN, suite::CipherSuite};

/// The initiator's handshake, one variant per state.
pub enum InitiatorHandshake {
    /// Our first hello is out; waiting for Accept or a refusal.
    AwaitingResponderHello(AwaitingResponderHello),
    /// Our second hello (after a suite refusal) is out; waiting for Accept.
    AwaitingRetriedResponderHello(AwaitingRetriedResponderHello),
}

/// What the initiator does after handling a message.
pub enum InitiatorStep {
    /// Send `message`, then feed the next received body to `next`.
    Send {
        /// The next state.
        next: InitiatorHandshake,
        /// The body to send.
        message: Vec<u8>,
    },
    /// Send `message` (the last one), then the connection is secure.
    Complete {
        /// The body to send.
        message: Vec<u8>,
        /// Keys and the remote identity.
        outcome: HandshakeOutcome,
    },
}

/// An offered suite and the Noise state whose first message went out.
struct Offer {
    config: Config,
    expected: Option<PeerId>,
    suite: CipherSuite,
    noise: Box<HandshakeState>,
}

/// Waiting for the responder's answer to the first hello.
pub struct AwaitingResponderHello {
    offer: Offer,
    /// The first hello's version and suite, bound into a retry's prologue.
    header: [u8; HELLO_HEADER_LEN],
}

/// Waiting for the responder's answer to the retried hello; a second
/// refusal is an error.
pub struct AwaitingRetriedResponderHello {
    offer: Offer,
}

impl InitiatorHandshake {
    /// Starts a handshake, returning the state and the hello to send.
    ///
    /// Offers the first suite of `config`'s preference list. With
    /// `expected`, the handshake fails with
    /// [`HandshakeError::PeerIdMismatch`] before our identity and the final
    /// message are sent if the responder is someone else.
    pub fn start(
        config: &Config,
        expected: Option<PeerId>,
    ) -> Result<(InitiatorHandshake, Vec<u8>), HandshakeError> {
        let Some(&suite) = config.suites().first() else {
            return Err(HandshakeError::NoCommonSuite {
                ours: Vec::new(),
                theirs: Vec::new(),
            });
        };
        let header = hello_header(suite.id());
        let mut prologue = PROLOGUE_TAG.to_vec();
        prologue.extend_from_slice(&header);
        let (offer, hello) = Offer::new(config.clone(), expected, suite, &prologue)?;
        tracing::trace!(%suite, "secio: sending hello");
        let state = AwaitingResponderHello { offer, header };
        Ok((InitiatorHandshake::AwaitingResponderHello(state), hello))
    }

    /// Handles the next received message body.
    pub fn handle(self, body: &[u8]) -> Result<InitiatorStep, HandshakeError> {
        match self {
            InitiatorHandshake::AwaitingResponderHello(state) => state.handle(body),
            InitiatorHandshake::AwaitingRetriedResponderHello(state) => state.handle(body),
        }
    }
}

impl AwaitingResponderHello {
    /// Handles the responder's answer to the first hello.
    pub fn handle(self, body: &[u8]) -> Result<InitiatorStep, HandshakeError> {
        check_size(&self.offer.config, body)?;
        match Response::parse(body)? {
            Response::Accept { noise } => self.offer.finish(noise),
            Response::VersionRefused { versions } => Err(version_refused(versions)),
            Response::SuiteRefused { suites } => {
                let config = &self.offer.config;
                let refused = self.offer.suite;
                let Some(suite) = config
                    .suites()
                    .iter()
                    .copied()
                    .find(|s| *s != refused && suites.contains(&s.id()))
                else {
                    return Err(HandshakeError::NoCommonSuite {
                        ours: config.suites().to_vec(),
                        theirs: suites.to_vec(),
                    });
                };
                tracing::debug!(%refused, %suite, "secio: suite refused, retrying");
                let header = hello_header(suite.id());
                let mut prologue = PROLOGUE_TAG.to_vec();
                prologue.extend_from_slice(&self.header);
                prologue.extend_from_slice(body);
                prologue.extend_from_slice(&header);
                let (offer, hello) =
                    Offer::new(self.offer.config, self.offer.expected, suite, &prologue)?;
                Ok(InitiatorStep::Send {
                    next: InitiatorHandshake::AwaitingRetriedResponderHello(
                        AwaitingRetriedResponderHello { offer },
                    ),
                    message: hello,
                })
            }
        }
    }
}

impl AwaitingRetriedResponderHello {
    /// Handles the responder's answer to the retried hello.
    pub fn handle(self, body: &[u8]) -> Result<InitiatorStep, HandshakeError> {
        check_size(&self.offer.config, body)?;
        match Response::parse(body)? {
            Response::Accept { noise } => self.offer.finish(noise),
            Response::VersionRefused { versions } => Err(version_refused(versions)),
            Response::SuiteRefused { .. } => Err(HandshakeError::RepeatedSuiteRefusal),
        }
    }
}

impl Offer {
    /// Builds the Noise state and the hello carrying its first message.
    fn new(
        config: Config,
        expected: Option<PeerId>,
        suite: CipherSuite,
        prologue: &[u8],
    ) -> Result<(Offer, Vec<u8>), HandshakeError> {
        let mut noise = build_noise(&config, suite, prologue, true)?;
        // Snow wants room for a tag even though message 1 is not encrypted.
        let mut hello = vec![0u8; HELLO_HEADER_LEN + NOISE_MESSAGE_1_LEN + TAG_LEN];
        hello[..HELLO_HEADER_LEN].copy_from_slice(&hello_header(suite.id()));
        let len = noise.write_message(&[], &mut hello[HELLO_HEADER_LEN..])?;
        hello.truncate(HELLO_HEADER_LEN + len);
        let offer = Offer {
            config,
            expected,
            suite,
            noise,
        };
        Ok((offer, hello))
    }

    /// Reads noise message 2, authenticates the responder and writes
    /// message 3. Fails before writing anything if the responder is not the
    /// expected peer.
    fn finish(mut self, noise_message: &[u8]) -> Result<InitiatorStep, HandshakeError> {
        let remote = read_authenticated(&mut self.noise, noise_message)?;
        check_expected(self.expected, &remote)?;
        let message = write_authenticated(&self.config, &mut self.noise, &[])?;
        let outcome = complete(&self.config, self.noise, remote, self.suite)?;
        Ok(InitiatorStep::Complete { message, outcome })
    }
}

fn version_refused(versions: &[u8]) -> HandshakeError {
    HandshakeError::VersionRefused {
        supported: versions.to_vec(),
    }
}
