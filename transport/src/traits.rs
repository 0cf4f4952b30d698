//! The transport and listener traits.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::{Multiaddr, TransportError};

/// Opens and accepts byte-stream connections for some family of addresses.
///
/// Implementations apply their own dial timeout (see each transport's
/// config), so `dial` always completes. A trailing `/p2p/<peer-id>` component
/// is accepted and ignored: checking the remote identity is the job of the
/// secure channel above.
pub trait Transport: Send + Sync + 'static {
    /// A connection in either direction.
    type Connection: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The listener returned by [`Transport::listen`].
    type Listener: Listener<Connection = Self::Connection>;

    /// Whether this transport can dial or listen on `addr`.
    fn supports(&self, addr: &Multiaddr) -> bool;

    /// Starts listening on `addr`. Port 0 picks a free port; the listener's
    /// [`Listener::local_addr`] reports the address actually bound.
    fn listen(
        &self,
        addr: &Multiaddr,
    ) -> impl Future<Output = Result<Self::Listener, TransportError>> + Send;

    /// Connects to `addr`, failing with [`TransportError::DialTimeout`] when
    /// the configured dial timeout expires first.
    fn dial(
        &self,
        addr: &Multiaddr,
    ) -> impl Future<Output = Result<Self::Connection, TransportError>> + Send;
}

/// An accepted connection and where it came from.
#[derive(Debug)]
pub struct Inbound<C> {
    /// The connection.
    pub connection: C,
    /// The remote end's address, as seen by us.
    pub remote_addr: Multiaddr,
    /// Our address for this connection.
    pub local_addr: Multiaddr,
}

/// A bound listener yielding inbound connections.
pub trait Listener: Send + Unpin + 'static {
    /// The connection type.
    type Connection: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The address actually bound (with the real port when 0 was asked for).
    fn local_addr(&self) -> &Multiaddr;

    /// Polls for the next inbound connection.
    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Inbound<Self::Connection>, TransportError>>;
}

/// Convenience methods on every [`Listener`].
pub trait ListenerExt: Listener {
    /// Waits for the next inbound connection.
    fn accept(&mut self) -> Accept<'_, Self>
    where
        Self: Sized,
    {
        Accept { listener: self }
    }
}

impl<L: Listener> ListenerExt for L {}

/// Future returned by [`ListenerExt::accept`].
#[derive(Debug)]
pub struct Accept<'a, L> {
    listener: &'a mut L,
}

impl<L: Listener> Future for Accept<'_, L> {
    type Output = Result<Inbound<L::Connection>, TransportError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.listener.poll_accept(cx)
    }
}
