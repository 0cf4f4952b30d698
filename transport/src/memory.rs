//! An in-process network: many nodes in one test, no sockets.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::DuplexStream,
    sync::mpsc::{self, error::TrySendError},
};

use crate::{Inbound, Listener, Multiaddr, Protocol, Transport, TransportError};

/// A connection on a [`MemoryNetwork`]: one end of an in-memory pipe.
pub type MemoryConnection = DuplexStream;

/// Default bytes buffered in each direction of a memory connection before a
/// writer waits for the reader.
pub const DEFAULT_MEMORY_BUFFER: usize = 256 * 1024;
/// Default number of dialled connections a listener holds before it refuses.
pub const DEFAULT_MEMORY_BACKLOG: usize = 1024;
/// Default time allowed for a memory dial.
pub const DEFAULT_MEMORY_DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of a [`MemoryTransport`].
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// Bytes buffered per direction (default [`DEFAULT_MEMORY_BUFFER`]).
    pub buffer_size: usize,
    /// Connections waiting to be accepted before dials are refused
    /// (default [`DEFAULT_MEMORY_BACKLOG`]); set on the listening side.
    pub backlog: usize,
    /// Time allowed for a dial (default [`DEFAULT_MEMORY_DIAL_TIMEOUT`]).
    pub dial_timeout: Duration,
}

impl Default for MemoryConfig {
    fn default() -> MemoryConfig {
        MemoryConfig {
            buffer_size: DEFAULT_MEMORY_BUFFER,
            backlog: DEFAULT_MEMORY_BACKLOG,
            dial_timeout: DEFAULT_MEMORY_DIAL_TIMEOUT,
        }
    }
}

struct Pending {
    connection: DuplexStream,
    remote_port: u64,
}

#[derive(Default)]
struct Registry {
    listeners: HashMap<u64, mpsc::Sender<Pending>>,
    /// Next candidate for an automatically assigned port (never 0).
    next_port: u64,
}

impl Registry {
    fn free_port(&mut self) -> u64 {
        loop {
            self.next_port = self.next_port.wrapping_add(1).max(1);
            if !self.listeners.contains_key(&self.next_port) {
                return self.next_port;
            }
        }
    }
}

/// A set of in-memory listeners that [`MemoryTransport`]s dial each other on.
///
/// Each network is an independent object: two tests never see each other's
/// ports. Cloning shares the network.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    registry: Arc<Mutex<Registry>>,
}

impl std::fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryNetwork")
            .field("listeners", &self.lock().listeners.len())
            .finish()
    }
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> MemoryNetwork {
        MemoryNetwork::default()
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // The registry holds no invariant a panicking holder could break
        // half-way, so a poisoned lock is still usable.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Transport over a [`MemoryNetwork`]: addresses `/memory/<port>`, optionally
/// followed by `/p2p/<peer-id>`. Port 0 asks for a free port.
#[derive(Debug, Clone)]
pub struct MemoryTransport {
    network: MemoryNetwork,
    config: MemoryConfig,
}

impl MemoryTransport {
    /// A transport on `network` with default settings.
    pub fn new(network: &MemoryNetwork) -> MemoryTransport {
        MemoryTransport::with_config(network, MemoryConfig::default())
    }

    /// A transport on `network` with the given settings.
    pub fn with_config(network: &MemoryNetwork, config: MemoryConfig) -> MemoryTransport {
        MemoryTransport {
            network: network.clone(),
            config,
        }
    }
}

fn parse_memory(addr: &Multiaddr) -> Option<u64> {
    let mut it = addr.iter();
    let Some(Protocol::Memory(port)) = it.next() else {
        return None;
    };
    match (it.next(), it.next()) {
        (None, _) | (Some(Protocol::P2p(_)), None) => Some(*port),
        _ => None,
    }
}

fn memory_addr(port: u64) -> Multiaddr {
    Multiaddr::empty().with(Protocol::Memory(port))
}

impl Transport for MemoryTransport {
    type Connection = MemoryConnection;
    type Listener = MemoryListener;

    fn supports(&self, addr: &Multiaddr) -> bool {
        parse_memory(addr).is_some()
    }

    async fn listen(&self, addr: &Multiaddr) -> Result<MemoryListener, TransportError> {
        let port =
            parse_memory(addr).ok_or_else(|| TransportError::UnsupportedAddress(addr.clone()))?;
        let mut registry = self.network.lock();
        let port = if port == 0 {
            registry.free_port()
        } else if registry.listeners.contains_key(&port) {
            return Err(TransportError::AddressInUse(addr.clone()));
        } else {
            port
        };
        let (tx, rx) = mpsc::channel(self.config.backlog.max(1));
        registry.listeners.insert(port, tx);
        Ok(MemoryListener {
            network: self.network.clone(),
            port,
            local_addr: memory_addr(port),
            incoming: rx,
        })
    }

    async fn dial(&self, addr: &Multiaddr) -> Result<MemoryConnection, TransportError> {
        let port =
            parse_memory(addr).ok_or_else(|| TransportError::UnsupportedAddress(addr.clone()))?;
        let mut registry = self.network.lock();
        let sender = registry
            .listeners
            .get(&port)
            .cloned()
            .ok_or_else(|| TransportError::ConnectionRefused(addr.clone()))?;
        // The dialler's end gets a port number of its own so the listener
        // sees a distinct remote address per connection.
        let remote_port = registry.free_port();
        drop(registry);
        let (ours, theirs) = tokio::io::duplex(self.config.buffer_size);
        match sender.try_send(Pending {
            connection: theirs,
            remote_port,
        }) {
            Ok(()) => Ok(ours),
            // A full backlog refuses like a full kernel accept queue would.
            Err(TrySendError::Full(_)) | Err(TrySendError::Closed(_)) => {
                Err(TransportError::ConnectionRefused(addr.clone()))
            }
        }
    }
}

/// A listener on a [`MemoryNetwork`]. Dropping it frees the port.
#[derive(Debug)]
pub struct MemoryListener {
    network: MemoryNetwork,
    port: u64,
    local_addr: Multiaddr,
    incoming: mpsc::Receiver<Pending>,
}

impl Listener for MemoryListener {
    type Connection = MemoryConnection;

    fn local_addr(&self) -> &Multiaddr {
        &self.local_addr
    }

    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Inbound<MemoryConnection>, TransportError>> {
        match self.incoming.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(Err(TransportError::ListenerClosed)),
            Poll::Ready(Some(pending)) => Poll::Ready(Ok(Inbound {
                connection: pending.connection,
                remote_addr: memory_addr(pending.remote_port),
                local_addr: self.local_addr.clone(),
            })),
        }
    }
}

impl Drop for MemoryListener {
    fn drop(&mut self) {
        self.network.lock().listeners.remove(&self.port);
    }
}
