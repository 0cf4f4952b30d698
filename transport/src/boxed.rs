//! Type-erased transports, for callers that pick a transport at run time.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::{Inbound, Listener, Multiaddr, Transport, TransportError};

/// A byte stream of any transport.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A connection of a [`BoxedTransport`].
pub type BoxedConnection = Box<dyn Io>;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

trait DynTransport: Send + Sync + 'static {
    fn supports(&self, addr: &Multiaddr) -> bool;
    fn listen<'a>(
        &'a self,
        addr: &'a Multiaddr,
    ) -> BoxFuture<'a, Result<BoxedListener, TransportError>>;
    fn dial<'a>(
        &'a self,
        addr: &'a Multiaddr,
    ) -> BoxFuture<'a, Result<BoxedConnection, TransportError>>;
}

impl<T: Transport> DynTransport for T {
    fn supports(&self, addr: &Multiaddr) -> bool {
        Transport::supports(self, addr)
    }

    fn listen<'a>(
        &'a self,
        addr: &'a Multiaddr,
    ) -> BoxFuture<'a, Result<BoxedListener, TransportError>> {
        Box::pin(async move {
            let listener = Transport::listen(self, addr).await?;
            Ok(BoxedListener {
                inner: Box::new(listener),
            })
        })
    }

    fn dial<'a>(
        &'a self,
        addr: &'a Multiaddr,
    ) -> BoxFuture<'a, Result<BoxedConnection, TransportError>> {
        Box::pin(async move {
            let connection = Transport::dial(self, addr).await?;
            Ok(Box::new(connection) as BoxedConnection)
        })
    }
}

/// Any [`Transport`] behind one type.
pub struct BoxedTransport {
    inner: Box<dyn DynTransport>,
}

impl BoxedTransport {
    /// Erases the type of `transport`.
    pub fn new<T: Transport>(transport: T) -> BoxedTransport {
        BoxedTransport {
            inner: Box::new(transport),
        }
    }
}

impl fmt::Debug for BoxedTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BoxedTransport")
    }
}

impl Transport for BoxedTransport {
    type Connection = BoxedConnection;
    type Listener = BoxedListener;

    fn supports(&self, addr: &Multiaddr) -> bool {
        self.inner.supports(addr)
    }

    async fn listen(&self, addr: &Multiaddr) -> Result<BoxedListener, TransportError> {
        self.inner.listen(addr).await
    }

    async fn dial(&self, addr: &Multiaddr) -> Result<BoxedConnection, TransportError> {
        self.inner.dial(addr).await
    }
}

trait DynListener: Send + Unpin + 'static {
    fn local_addr(&self) -> &Multiaddr;
    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Inbound<BoxedConnection>, TransportError>>;
}

impl<L: Listener> DynListener for L {
    fn local_addr(&self) -> &Multiaddr {
        Listener::local_addr(self)
    }

    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Inbound<BoxedConnection>, TransportError>> {
        Listener::poll_accept(self, cx).map(|r| {
            r.map(|inbound| Inbound {
                connection: Box::new(inbound.connection) as BoxedConnection,
                remote_addr: inbound.remote_addr,
                local_addr: inbound.local_addr,
            })
        })
    }
}

/// The listener of a [`BoxedTransport`].
pub struct BoxedListener {
    inner: Box<dyn DynListener>,
}

impl fmt::Debug for BoxedListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxedListener")
            .field("local_addr", self.inner.local_addr())
            .finish()
    }
}

impl Listener for BoxedListener {
    type Connection = BoxedConnection;

    fn local_addr(&self) -> &Multiaddr {
        self.inner.local_addr()
    }

    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Inbound<BoxedConnection>, TransportError>> {
        self.inner.poll_accept(cx)
    }
}
