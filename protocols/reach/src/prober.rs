//! [`Prober`]: the service a checker dials back from.
//!
//! The requester and the checker are usually connected already, and the
//! service keeps one session per pair of peers: a dial-back from the
//! checker's own identity would return that session instead of testing the
//! address. The prober has an identity of its own, made for it, and dials
//! only the address it is given, expecting the requester's peer id; after
//! the nonce's round trip it disconnects.

use std::time::Duration;

use shoal::{BuildError, DialOptions, ProtocolId, ProtocolMeta, ServiceBuilder, ServiceControl};
use shoal_identity::{Keypair, PeerId};
use shoal_transport::{Multiaddr, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::BACK_PROTOCOL_NAME;

/// Id of the back protocol on the prober's own service.
const BACK: ProtocolId = ProtocolId(1);

/// Dials requesters back (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Prober {
    control: ServiceControl,
    timeout: Duration,
}

impl Prober {
    /// Starts a prober on `transport` (the family of addresses it can
    /// check: TCP for real nodes), each dial-back bounded by `timeout`.
    /// Needs a tokio runtime; runs until [`Prober::shutdown`].
    pub fn start(transport: impl Transport, timeout: Duration) -> Result<Prober, BuildError> {
        // Its inbound back streams are never read: nobody dials a prober.
        let (back, _) = ProtocolMeta::builder(BACK, BACK_PROTOCOL_NAME).raw_streams();
        let service = ServiceBuilder::new(Keypair::generate())
            .transport(transport)
            .protocol(back)
            .build()?;
        let control = service.control();
        tokio::spawn(service);
        Ok(Prober { control, timeout })
    }

    /// The prober's own peer id (what requesters see dialling them).
    pub fn peer_id(&self) -> PeerId {
        self.control.local_peer_id()
    }

    /// Stops the prober's service.
    pub async fn shutdown(&self) {
        self.control.shutdown().await;
    }

    /// Dials `requester` at `addr` on a new connection, sends `nonce` and
    /// waits for it to come back. Whether it did.
    pub async fn dial_back(&self, addr: &Multiaddr, requester: PeerId, nonce: u64) -> bool {
        let attempt = async {
            let session = self
                .control
                .dial(addr.with_peer_id(requester), DialOptions::default())
                .await
                .ok()?;
            let id = session.id;
            let echoed = async {
                let mut stream = self.control.open_raw_stream(id, BACK).await.ok()?;
                stream.write_all(&nonce.to_be_bytes()).await.ok()?;
                let mut back = [0u8; 8];
                stream.read_exact(&mut back).await.ok()?;
                Some(back == nonce.to_be_bytes())
            }
            .await;
            let _ = self.control.disconnect(id).await;
            echoed
        };
        matches!(
            tokio::time::timeout(self.timeout, attempt).await,
            Ok(Some(true))
        )
    }
}
