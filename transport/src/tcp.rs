//! TCP over tokio, IPv4 and IPv6.

use std::{
    io,
    net::SocketAddr,
    task::{Context, Poll},
    time::Duration,
};

use tokio::net::{TcpSocket, TcpStream};

use crate::{Inbound, Listener, Multiaddr, Protocol, Transport, TransportError};

/// Default time allowed for a TCP dial, DNS resolution included.
pub const DEFAULT_TCP_DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Default length of the kernel's queue of not-yet-accepted connections.
pub const DEFAULT_TCP_LISTEN_BACKLOG: u32 = 1024;

/// Settings of a [`TcpTransport`].
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// Disable Nagle's algorithm on every connection (default: true). Leaving
    /// Nagle on delays small writes by up to tens of milliseconds.
    pub nodelay: bool,
    /// Time allowed for one dial, DNS resolution included
    /// (default [`DEFAULT_TCP_DIAL_TIMEOUT`]).
    pub dial_timeout: Duration,
    /// Kernel accept-queue length (default [`DEFAULT_TCP_LISTEN_BACKLOG`]).
    pub listen_backlog: u32,
    /// The local IP address dials leave from, for targets of its family
    /// (default: none, the kernel's choice by route). A host with several
    /// addresses (or a test giving each node its own loopback address)
    /// sets it, so peers see it under the address it listens on.
    pub source_ip: Option<std::net::IpAddr>,
}

impl Default for TcpConfig {
    fn default() -> TcpConfig {
        TcpConfig {
            nodelay: true,
            dial_timeout: DEFAULT_TCP_DIAL_TIMEOUT,
            listen_backlog: DEFAULT_TCP_LISTEN_BACKLOG,
            source_ip: None,
        }
    }
}

/// TCP transport: addresses `/ip4/<ip>/tcp/<port>`, `/ip6/<ip>/tcp/<port>`
/// and `/dns|dns4|dns6/<name>/tcp/<port>` (dial only), each optionally
/// followed by `/p2p/<peer-id>`.
#[derive(Debug, Clone, Default)]
pub struct TcpTransport {
    config: TcpConfig,
}

impl TcpTransport {
    /// A TCP transport with the given settings.
    pub fn new(config: TcpConfig) -> TcpTransport {
        TcpTransport { config }
    }

    /// The settings in use.
    pub fn config(&self) -> &TcpConfig {
        &self.config
    }
}

/// The host part of a TCP address, before resolution.
enum Host<'a> {
    Ip(SocketAddr),
    Name {
        name: &'a str,
        port: u16,
        family: Family,
    },
}

#[derive(Clone, Copy)]
enum Family {
    Any,
    V4,
    V6,
}

fn parse_tcp(addr: &Multiaddr) -> Option<Host<'_>> {
    let mut it = addr.iter();
    let host = it.next()?;
    let Some(Protocol::Tcp(port)) = it.next() else {
        return None;
    };
    match it.next() {
        None | Some(Protocol::P2p(_)) => {}
        Some(_) => return None,
    }
    if it.next().is_some() {
        return None;
    }
    let port = *port;
    Some(match host {
        Protocol::Ip4(ip) => Host::Ip(SocketAddr::from((*ip, port))),
        Protocol::Ip6(ip) => Host::Ip(SocketAddr::from((*ip, port))),
        Protocol::Dns(name) => Host::Name {
            name,
            port,
            family: Family::Any,
        },
        Protocol::Dns4(name) => Host::Name {
            name,
            port,
            family: Family::V4,
        },
        Protocol::Dns6(name) => Host::Name {
            name,
            port,
            family: Family::V6,
        },
        _ => return None,
    })
}

impl TcpTransport {
    fn configure(&self, stream: &TcpStream) -> io::Result<()> {
        stream.set_nodelay(self.config.nodelay)
    }

    async fn resolve(host: Host<'_>) -> Result<Vec<SocketAddr>, TransportError> {
        match host {
            Host::Ip(sock) => Ok(vec![sock]),
            Host::Name { name, port, family } => {
                let found = tokio::net::lookup_host((name, port)).await.map_err(|e| {
                    TransportError::Resolve {
                        name: name.to_owned(),
                        reason: e.to_string(),
                    }
                })?;
                let addrs: Vec<SocketAddr> = found
                    .filter(|a| match family {
                        Family::Any => true,
                        Family::V4 => a.is_ipv4(),
                        Family::V6 => a.is_ipv6(),
                    })
                    .collect();
                if addrs.is_empty() {
                    return Err(TransportError::Resolve {
                        name: name.to_owned(),
                        reason: "no address of the requested family".into(),
                    });
                }
                Ok(addrs)
            }
        }
    }

    /// Connects to `target`, from [`TcpConfig::source_ip`] if it is of the
    /// target's family.
    async fn connect(&self, target: SocketAddr) -> io::Result<TcpStream> {
        let Some(ip) = self
            .config
            .source_ip
            .filter(|ip| ip.is_ipv4() == target.is_ipv4())
        else {
            return TcpStream::connect(target).await;
        };
        let socket = if ip.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.bind(SocketAddr::new(ip, 0))?;
        socket.connect(target).await
    }

    async fn dial_inner(&self, addr: &Multiaddr) -> Result<TcpStream, TransportError> {
        let host =
            parse_tcp(addr).ok_or_else(|| TransportError::UnsupportedAddress(addr.clone()))?;
        let targets = Self::resolve(host).await?;
        let mut last_error = None;
        for target in targets {
            match self.connect(target).await {
                Ok(stream) => {
                    self.configure(&stream)
                        .map_err(|source| TransportError::Io {
                            context: "configure",
                            addr: addr.clone(),
                            source,
                        })?;
                    return Ok(stream);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(match last_error {
            Some(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                TransportError::ConnectionRefused(addr.clone())
            }
            Some(source) => TransportError::Io {
                context: "dial",
                addr: addr.clone(),
                source,
            },
            None => TransportError::UnsupportedAddress(addr.clone()),
        })
    }
}

impl Transport for TcpTransport {
    type Connection = TcpStream;
    type Listener = TcpListener;

    fn supports(&self, addr: &Multiaddr) -> bool {
        parse_tcp(addr).is_some()
    }

    async fn listen(&self, addr: &Multiaddr) -> Result<TcpListener, TransportError> {
        let Some(Host::Ip(sock)) = parse_tcp(addr) else {
            return Err(TransportError::UnsupportedAddress(addr.clone()));
        };
        let io_err = |source| TransportError::Io {
            context: "listen on",
            addr: addr.clone(),
            source,
        };
        let socket = if sock.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(io_err)?;
        #[cfg(unix)]
        socket.set_reuseaddr(true).map_err(io_err)?;
        socket.bind(sock).map_err(|source| {
            if source.kind() == io::ErrorKind::AddrInUse {
                TransportError::AddressInUse(addr.clone())
            } else {
                io_err(source)
            }
        })?;
        let listener = socket.listen(self.config.listen_backlog).map_err(io_err)?;
        let bound = listener.local_addr().map_err(io_err)?;
        Ok(TcpListener {
            inner: listener,
            local_addr: Multiaddr::from(bound),
            nodelay: self.config.nodelay,
        })
    }

    async fn dial(&self, addr: &Multiaddr) -> Result<TcpStream, TransportError> {
        let timeout = self.config.dial_timeout;
        match tokio::time::timeout(timeout, self.dial_inner(addr)).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::DialTimeout {
                addr: addr.clone(),
                after: timeout,
            }),
        }
    }
}

/// A bound TCP listener.
#[derive(Debug)]
pub struct TcpListener {
    inner: tokio::net::TcpListener,
    local_addr: Multiaddr,
    nodelay: bool,
}

impl Listener for TcpListener {
    type Connection = TcpStream;

    fn local_addr(&self) -> &Multiaddr {
        &self.local_addr
    }

    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Inbound<TcpStream>, TransportError>> {
        // Errors such as EMFILE concern one accept, not the listener; report
        // them and let the caller decide whether to keep accepting.
        let (stream, remote) = match self.inner.poll_accept(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(accepted)) => accepted,
            Poll::Ready(Err(source)) => {
                return Poll::Ready(Err(TransportError::Io {
                    context: "accept on",
                    addr: self.local_addr.clone(),
                    source,
                }));
            }
        };
        if let Err(source) = stream.set_nodelay(self.nodelay) {
            return Poll::Ready(Err(TransportError::Io {
                context: "configure",
                addr: Multiaddr::from(remote),
                source,
            }));
        }
        let local_addr = stream
            .local_addr()
            .map(Multiaddr::from)
            .unwrap_or_else(|_| self.local_addr.clone());
        Poll::Ready(Ok(Inbound {
            connection: stream,
            remote_addr: Multiaddr::from(remote),
            local_addr,
        }))
    }
}
