//! Handshake configuration.

use std::{fmt, sync::Arc, time::Duration};

use shoal_identity::{Keypair, PeerId};
use zeroize::Zeroizing;

use crate::{
    budget::ReceiveBudget,
    frame::MAX_FRAME_LEN,
    payload::{HandshakePayload, KEY_LEN},
    suite::CipherSuite,
};

/// Default for [`Config::with_handshake_timeout`]: the whole handshake must
/// finish within this time. Protects against peers that open a connection
/// and stall, holding a half-open handshake (and its memory) forever.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default for [`Config::with_max_handshake_message`]: the largest handshake
/// message body accepted. Protects against a peer declaring a huge message
/// before it has authenticated. Our own messages are under 256 bytes.
pub const DEFAULT_MAX_HANDSHAKE_MESSAGE: usize = 4096;

/// Smallest value [`Config::with_max_handshake_message`] accepts; smaller
/// values are raised to it (the protocol's own messages must fit).
pub const MIN_MAX_HANDSHAKE_MESSAGE: usize = 512;

/// What one side of a handshake needs: its identity, the suites it speaks
/// and the limits it enforces.
///
/// Cloning is cheap (the key material is shared).
///
/// ```
/// use std::time::Duration;
/// use shoal_identity::Keypair;
/// use shoal_secio::{CipherSuite, Config};
///
/// let config = Config::new(Keypair::generate())
///     .with_suites([CipherSuite::ChaChaPoly])
///     .with_handshake_timeout(Duration::from_secs(5));
/// assert_eq!(config.suites(), &[CipherSuite::ChaChaPoly]);
/// ```
#[derive(Clone)]
pub struct Config {
    local: Arc<LocalKeys>,
    suites: Vec<CipherSuite>,
    handshake_timeout: Duration,
    max_handshake_message: usize,
    receive_budget: ReceiveBudget,
}

/// The identity key pair, the Noise static key it certifies and the
/// pre-computed payload carrying that certification.
pub(crate) struct LocalKeys {
    pub(crate) identity: Keypair,
    pub(crate) static_secret: Zeroizing<[u8; KEY_LEN]>,
    pub(crate) static_public: [u8; KEY_LEN],
    /// The encoded [`HandshakePayload`] sent to every peer.
    pub(crate) payload: Vec<u8>,
}

impl Config {
    /// A configuration for `identity` with the defaults: suites in
    /// [`CipherSuite::default_preference`] order,
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`], [`DEFAULT_MAX_HANDSHAKE_MESSAGE`], and
    /// a new [`ReceiveBudget`] of
    /// [`DEFAULT_RECEIVE_BUDGET`](crate::DEFAULT_RECEIVE_BUDGET) shared by
    /// this configuration's clones.
    ///
    /// Generates the Noise static key (X25519) that `identity` signs once
    /// here; every handshake made with this configuration (or a clone of it)
    /// uses it.
    ///
    /// # Panics
    /// If the operating system cannot provide randomness; see
    /// [`Config::try_new`] for the fallible form.
    pub fn new(identity: Keypair) -> Config {
        match Config::try_new(identity) {
            Ok(config) => config,
            Err(e) => panic!("cannot generate a noise static key: {e}"),
        }
    }

    /// Like [`Config::new`], reporting a failing random source as an error.
    pub fn try_new(identity: Keypair) -> Result<Config, snow::Error> {
        let params = CipherSuite::ChaChaPoly.noise_params()?;
        let generated = snow::Builder::new(params).generate_keypair()?;
        let private = Zeroizing::new(generated.private);
        let mut static_secret = Zeroizing::new([0u8; KEY_LEN]);
        let mut static_public = [0u8; KEY_LEN];
        if private.len() != KEY_LEN || generated.public.len() != KEY_LEN {
            return Err(snow::Error::Input);
        }
        static_secret.copy_from_slice(&private);
        static_public.copy_from_slice(&generated.public);
        Ok(Config::with_local_keys(LocalKeys::new(
            identity,
            static_secret,
            static_public,
        )))
    }

    pub(crate) fn with_local_keys(local: LocalKeys) -> Config {
        Config {
            local: Arc::new(local),
            suites: CipherSuite::default_preference(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_handshake_message: DEFAULT_MAX_HANDSHAKE_MESSAGE,
            receive_budget: ReceiveBudget::default(),
        }
    }

    /// Sets the supported suites in preference order (duplicates are
    /// dropped). With an empty list every handshake fails with
    /// [`HandshakeError::NoCommonSuite`](crate::HandshakeError::NoCommonSuite).
    pub fn with_suites(mut self, suites: impl IntoIterator<Item = CipherSuite>) -> Config {
        self.suites.clear();
        for suite in suites {
            if !self.suites.contains(&suite) {
                self.suites.push(suite);
            }
        }
        self
    }

    /// Sets the time limit for a whole handshake (default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Config {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets the largest handshake message body accepted (default
    /// [`DEFAULT_MAX_HANDSHAKE_MESSAGE`]). Clamped to
    /// [`MIN_MAX_HANDSHAKE_MESSAGE`]`..=65535`.
    pub fn with_max_handshake_message(mut self, max: usize) -> Config {
        self.max_handshake_message = max.clamp(MIN_MAX_HANDSHAKE_MESSAGE, MAX_FRAME_LEN);
        self
    }

    /// Sets the budget that bounds, together with every stream sharing it,
    /// the receive-buffer memory held beyond
    /// [`RECEIVE_BUFFER_FLOOR`](crate::RECEIVE_BUFFER_FLOOR) per stream
    /// (partial frames and read-ahead) and by handshake messages. Pass one
    /// budget to several configurations for one bound across all of them.
    pub fn with_receive_budget(mut self, budget: ReceiveBudget) -> Config {
        self.receive_budget = budget;
        self
    }

    /// The local identity key pair.
    pub fn identity(&self) -> &Keypair {
        &self.local.identity
    }

    /// The local peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local.identity.peer_id()
    }

    /// Supported suites, most preferred first.
    pub fn suites(&self) -> &[CipherSuite] {
        &self.suites
    }

    /// Time limit for a whole handshake.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// Largest handshake message body accepted.
    pub fn max_handshake_message(&self) -> usize {
        self.max_handshake_message
    }

    /// The receive budget streams secured with this configuration draw on.
    pub fn receive_budget(&self) -> &ReceiveBudget {
        &self.receive_budget
    }

    /// The public half of the X25519 Noise static key the identity signs.
    pub fn noise_static_public_key(&self) -> [u8; KEY_LEN] {
        self.local.static_public
    }

    pub(crate) fn local(&self) -> &LocalKeys {
        &self.local
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("peer_id", &self.local_peer_id())
            .field("suites", &self.suites)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_handshake_message", &self.max_handshake_message)
            .field("receive_budget", &self.receive_budget)
            .finish_non_exhaustive()
    }
}

impl LocalKeys {
    pub(crate) fn new(
        identity: Keypair,
        static_secret: Zeroizing<[u8; KEY_LEN]>,
        static_public: [u8; KEY_LEN],
    ) -> LocalKeys {
        let payload = HandshakePayload::sign(&identity, &static_public).to_bytes();
        LocalKeys {
            identity,
            static_secret,
            static_public,
            payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_setters() {
        let config = Config::new(Keypair::generate());
        assert_eq!(config.handshake_timeout(), DEFAULT_HANDSHAKE_TIMEOUT);
        assert_eq!(
            config.max_handshake_message(),
            DEFAULT_MAX_HANDSHAKE_MESSAGE
        );
        assert_eq!(
            config.suites(),
            CipherSuite::default_preference().as_slice()
        );
        assert_eq!(
            config.receive_budget().total(),
            crate::DEFAULT_RECEIVE_BUDGET
        );
        assert!(
            config
                .clone()
                .receive_budget()
                .ptr_eq(config.receive_budget())
        );
        let shared = ReceiveBudget::new(1 << 20);
        let other = Config::new(Keypair::generate()).with_receive_budget(shared.clone());
        assert!(other.receive_budget().ptr_eq(&shared));

        let config = config
            .with_suites([
                CipherSuite::AesGcm,
                CipherSuite::AesGcm,
                CipherSuite::ChaChaPoly,
            ])
            .with_max_handshake_message(10);
        assert_eq!(
            config.suites(),
            &[CipherSuite::AesGcm, CipherSuite::ChaChaPoly]
        );
        assert_eq!(config.max_handshake_message(), MIN_MAX_HANDSHAKE_MESSAGE);
        assert_eq!(
            config
                .with_max_handshake_message(1 << 20)
                .max_handshake_message(),
            MAX_FRAME_LEN
        );
    }

    #[test]
    fn debug_shows_no_key_material() {
        let config = Config::new(Keypair::generate());
        let debug = format!("{config:?}");
        let secret: String = config
            .local()
            .static_secret
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!debug.contains(&secret));
        assert!(debug.contains(&config.local_peer_id().to_string()));
    }
}
