//! tentacle (Nervos' p2p framework) the way its examples use it: a
//! `Service` with secio (secp256k1 identities) and yamux, two protocols
//! declared with `MetaBuilder` and the default codec (tokio-util's
//! `LengthDelimitedCodec`, 8 MiB frame limit), `ServiceProtocol` callback
//! handlers, and messages sent with `ServiceAsyncControl::send_message_to`.
//!
//! tentacle does not set `TCP_NODELAY`; its socket hook
//! (`ServiceBuilder::tcp_config`) sets it here on dialing and listening
//! sockets, and Linux copies it from a listening socket to the sockets it
//! accepts ([`check_nodelay_inherited`] makes sure of that at start).
//!
//! Cipher: both nodes offer tentacle-secio's default list
//! `AES-128-GCM,AES-256-GCM,CHACHA20_POLY1305` (key agreement
//! `P-256,P-384,X25519`); with identical lists the first entry is chosen,
//! so a session runs AES-128-GCM (OpenSSL on Unix) after a P-256 exchange.
//!
//! A sender that outruns the connection gets its session killed once more
//! than `send_buffer_size` (24 MiB) is queued (`ServiceError::SessionBlocked`),
//! so the bulk sender waits while more than [`SEND_HIGH_WATER`] bytes are
//! pending (`SessionContext::pending_data_size`), polling every millisecond:
//! tentacle has no "writable again" notification. Messages still in the
//! service's channel are not counted as pending yet, so for messages over
//! 64 KiB the client's send buffer is raised to fit them ([`send_buffer_for`]);
//! with the default 64 KiB every setting is tentacle's default.

use std::{
    collections::HashMap,
    net::{TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::future::BoxFuture;
use socket2::SockRef;
use tentacle::{
    ProtocolId, SessionId, async_trait,
    builder::{MetaBuilder, ServiceBuilder},
    context::{ProtocolContext, ProtocolContextMutRef, ServiceContext, SessionContext},
    multiaddr::Multiaddr,
    secio::SecioKeyPair,
    service::{
        HandshakeType, ProtocolHandle, ProtocolMeta, ServiceAsyncControl, ServiceError,
        ServiceEvent, TargetProtocol, TcpSocket, TransformerContext,
    },
    traits::{ServiceHandle, ServiceProtocol},
};
use tokio::sync::mpsc;

use crate::common::{
    BoxError, Description, ECHO_PROTOCOL, Meter, Result, SINK_PROTOCOL, STEP_TIMEOUT, SetupSample,
    Stack, Transfer, transfer_timeout, wait_until, within,
};

/// The bulk protocol: the server counts message bytes.
const SINK: ProtocolId = ProtocolId::new(1);
/// The echo protocol: the server replies with every message.
const ECHO: ProtocolId = ProtocolId::new(2);

/// The bulk sender waits while the session has more than this queued.
/// Measured on the reference machine with 64 KiB messages: 1, 2, 4 and
/// 8 MiB give the same throughput within noise (2 MiB a little ahead).
const SEND_HIGH_WATER: usize = 2 * 1024 * 1024;

/// tentacle's default `send_buffer_size`: a session with more than this
/// queued is killed.
const DEFAULT_SEND_BUFFER: usize = 24 * 1024 * 1024;

/// Messages that can be on their way to a session without being counted
/// as pending yet: tentacle's service channel holds 128
/// (`set_channel_size`), plus a margin for its per-sender slots.
const UNCOUNTED_MESSAGES: usize = 128 + 16;

/// The client's `send_buffer_size` for `chunk`-byte messages: the default
/// when [`SEND_HIGH_WATER`] plus the uncounted messages fit in it (64 KiB
/// messages: 11 MiB), otherwise raised so that they do, as an application
/// sending large messages would have to.
fn send_buffer_for(chunk: usize) -> usize {
    DEFAULT_SEND_BUFFER.max(SEND_HIGH_WATER + UNCOUNTED_MESSAGES * chunk)
}

/// What the client node reports to the bench, stamped when it happened.
#[derive(Debug)]
enum ClientEvent {
    /// A session opened (secio and yamux are up).
    SessionOpen {
        context: Arc<SessionContext>,
        at: Instant,
    },
    /// A protocol opened on a session.
    ProtocolOpen {
        session: SessionId,
        protocol: ProtocolId,
        at: Instant,
    },
    /// A message arrived.
    Received {
        session: SessionId,
        protocol: ProtocolId,
        at: Instant,
    },
    /// The node reported an error (a failed dial, a blocked session, …).
    Error(String),
}

/// Service handle of both nodes: counts open sessions; the client's also
/// forwards session openings and errors to the bench.
struct Handle {
    open_sessions: Arc<AtomicUsize>,
    events: Option<mpsc::Sender<ClientEvent>>,
}

#[async_trait]
impl ServiceHandle for Handle {
    async fn handle_error(&mut self, _ctx: &mut ServiceContext, error: ServiceError) {
        match &self.events {
            Some(events) => {
                let _ = events.send(ClientEvent::Error(format!("{error:?}"))).await;
            }
            None => eprintln!("tentacle server: {error:?}"),
        }
    }

    async fn handle_event(&mut self, _ctx: &mut ServiceContext, event: ServiceEvent) {
        match event {
            ServiceEvent::SessionOpen { session_context } => {
                let at = Instant::now();
                self.open_sessions.fetch_add(1, Ordering::AcqRel);
                if let Some(events) = &self.events {
                    let _ = events
                        .send(ClientEvent::SessionOpen {
                            context: session_context,
                            at,
                        })
                        .await;
                }
            }
            ServiceEvent::SessionClose { .. } => {
                self.open_sessions.fetch_sub(1, Ordering::AcqRel);
            }
            _ => {}
        }
    }
}

/// The client's protocol handler (both protocols): forwards openings and
/// arrivals to the bench.
struct ClientProtocol {
    events: mpsc::Sender<ClientEvent>,
}

#[async_trait]
impl ServiceProtocol for ClientProtocol {
    async fn init(&mut self, _ctx: &mut ProtocolContext) {}

    async fn connected(&mut self, ctx: ProtocolContextMutRef<'_>, _version: &str) {
        let at = Instant::now();
        let _ = self
            .events
            .send(ClientEvent::ProtocolOpen {
                session: ctx.session.id,
                protocol: ctx.proto_id(),
                at,
            })
            .await;
    }

    async fn received(&mut self, ctx: ProtocolContextMutRef<'_>, _data: Bytes) {
        let at = Instant::now();
        let _ = self
            .events
            .send(ClientEvent::Received {
                session: ctx.session.id,
                protocol: ctx.proto_id(),
                at,
            })
            .await;
    }
}

/// The server's sink: counts message bytes per session and reports once
/// the expected number has arrived.
struct ServerSink {
    received: HashMap<SessionId, u64>,
    expected: Arc<AtomicU64>,
    report: mpsc::Sender<u64>,
}

#[async_trait]
impl ServiceProtocol for ServerSink {
    async fn init(&mut self, _ctx: &mut ProtocolContext) {}

    async fn disconnected(&mut self, ctx: ProtocolContextMutRef<'_>) {
        self.received.remove(&ctx.session.id);
    }

    async fn received(&mut self, ctx: ProtocolContextMutRef<'_>, data: Bytes) {
        let count = self.received.entry(ctx.session.id).or_default();
        *count += data.len() as u64;
        if *count == self.expected.load(Ordering::Acquire) {
            let _ = self.report.send(*count).await;
        }
    }
}

/// The server's echo.
struct ServerEcho;

#[async_trait]
impl ServiceProtocol for ServerEcho {
    async fn init(&mut self, _ctx: &mut ProtocolContext) {}

    async fn received(&mut self, ctx: ProtocolContextMutRef<'_>, data: Bytes) {
        let _ = ctx.send_message(data).await;
    }
}

/// A tentacle server and client in this process.
pub struct TentacleStack {
    client: ServiceAsyncControl,
    addr: Multiaddr,
    events: mpsc::Receiver<ClientEvent>,
    sink_reports: mpsc::Receiver<u64>,
    sink_expected: Arc<AtomicU64>,
    client_sessions: Arc<AtomicUsize>,
    server_sessions: Arc<AtomicUsize>,
}

/// A protocol declaration with the default codec and `handler`.
fn meta(
    id: ProtocolId,
    name: &'static str,
    handler: Box<dyn ServiceProtocol + Send + Unpin + 'static>,
) -> ProtocolMeta {
    MetaBuilder::new()
        .id(id)
        .name(move |_| name.to_owned())
        .service_handle(move || ProtocolHandle::Callback(handler))
        .build()
}

/// tentacle's socket hook: `TCP_NODELAY` on every socket it creates.
fn nodelay(socket: TcpSocket, _ctx: TransformerContext) -> std::io::Result<TcpSocket> {
    SockRef::from(&socket).set_tcp_nodelay(true)?;
    Ok(socket)
}

/// Fails unless a socket accepted from a listener with `TCP_NODELAY` has it
/// too (true on Linux), since tentacle's hook only sees listening sockets.
pub fn check_nodelay_inherited() -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    SockRef::from(&listener).set_tcp_nodelay(true)?;
    let _dialer = TcpStream::connect(listener.local_addr()?)?;
    let (accepted, _) = listener.accept()?;
    if accepted.nodelay()? {
        Ok(())
    } else {
        Err("accepted sockets do not inherit TCP_NODELAY here: tentacle's listener side would run with Nagle on".into())
    }
}

impl TentacleStack {
    /// Starts a server listening on 127.0.0.1 and a client that will send
    /// `chunk`-byte messages in bulk.
    pub async fn start(chunk: usize) -> Result<TentacleStack> {
        check_nodelay_inherited()?;
        let (report_tx, sink_reports) = mpsc::channel(16);
        let sink_expected = Arc::new(AtomicU64::new(u64::MAX));
        let server_sessions = Arc::new(AtomicUsize::new(0));
        let sink = ServerSink {
            received: HashMap::new(),
            expected: sink_expected.clone(),
            report: report_tx,
        };
        let mut server = ServiceBuilder::new()
            .insert_protocol(meta(SINK, SINK_PROTOCOL, Box::new(sink)))
            .insert_protocol(meta(ECHO, ECHO_PROTOCOL, Box::new(ServerEcho)))
            .handshake_type(HandshakeType::Secio(SecioKeyPair::secp256k1_generated()))
            .tcp_config(nodelay)
            .forever(true)
            .build(Handle {
                open_sessions: server_sessions.clone(),
                events: None,
            });
        let addr = within(
            STEP_TIMEOUT,
            "tentacle listen",
            server.listen("/ip4/127.0.0.1/tcp/0".parse()?),
        )
        .await??;
        tokio::spawn(async move { server.run().await });

        let (events_tx, events) = mpsc::channel(1024);
        let client_sessions = Arc::new(AtomicUsize::new(0));
        let client_protocol = |events: &mpsc::Sender<ClientEvent>| {
            Box::new(ClientProtocol {
                events: events.clone(),
            })
        };
        let client = ServiceBuilder::new()
            .insert_protocol(meta(SINK, SINK_PROTOCOL, client_protocol(&events_tx)))
            .insert_protocol(meta(ECHO, ECHO_PROTOCOL, client_protocol(&events_tx)))
            .handshake_type(HandshakeType::Secio(SecioKeyPair::secp256k1_generated()))
            .tcp_config(nodelay)
            .set_send_buffer_size(send_buffer_for(chunk))
            .forever(true)
            .build(Handle {
                open_sessions: client_sessions.clone(),
                events: Some(events_tx),
            });
        let client_control = client.control().clone();
        let mut client = client;
        tokio::spawn(async move { client.run().await });

        Ok(TentacleStack {
            client: client_control,
            addr,
            events,
            sink_reports,
            sink_expected,
            client_sessions,
            server_sessions,
        })
    }

    /// Dials the server opening `protocol`; returns the session and the
    /// time its opening was reported.
    async fn dial(&mut self, protocol: ProtocolId) -> Result<(Arc<SessionContext>, Instant)> {
        within(
            STEP_TIMEOUT,
            "tentacle dial",
            self.client
                .dial(self.addr.clone(), TargetProtocol::Single(protocol)),
        )
        .await?
        .map_err(|e| format!("tentacle dial: {e:?}"))?;
        within(STEP_TIMEOUT, "tentacle session open", async {
            loop {
                match self.events.recv().await {
                    Some(ClientEvent::SessionOpen { context, at }) => return Ok((context, at)),
                    Some(ClientEvent::Error(e)) => return Err(BoxError::from(e)),
                    Some(_) => {}
                    None => return Err("tentacle: client stopped".into()),
                }
            }
        })
        .await?
    }

    /// Waits for the client's next report of `protocol` on `session`
    /// (an opening when `open`, otherwise an arrival); returns its time.
    async fn wait_for(
        &mut self,
        what: &str,
        session: SessionId,
        protocol: ProtocolId,
        open: bool,
    ) -> Result<Instant> {
        within(STEP_TIMEOUT, what, async {
            loop {
                match self.events.recv().await {
                    Some(ClientEvent::ProtocolOpen {
                        session: s,
                        protocol: p,
                        at,
                    }) if open && s == session && p == protocol => return Ok(at),
                    Some(ClientEvent::Received {
                        session: s,
                        protocol: p,
                        at,
                    }) if !open && s == session && p == protocol => return Ok(at),
                    Some(ClientEvent::Error(e)) => return Err(BoxError::from(e)),
                    Some(_) => {}
                    None => return Err("tentacle: client stopped".into()),
                }
            }
        })
        .await?
    }

    /// Closes `session` and waits until neither node has a session left
    /// (tentacle refuses a second session with the same peer).
    async fn close(&mut self, session: SessionId) -> Result<()> {
        within(
            STEP_TIMEOUT,
            "tentacle disconnect",
            self.client.disconnect(session),
        )
        .await?
        .map_err(|e| format!("tentacle disconnect: {e:?}"))?;
        let (client, server) = (self.client_sessions.clone(), self.server_sessions.clone());
        wait_until("tentacle sessions closed", move || {
            client.load(Ordering::Acquire) == 0 && server.load(Ordering::Acquire) == 0
        })
        .await
    }

    async fn bulk(&mut self, chunks: u64, chunk: usize) -> Result<Transfer> {
        let total = chunks * chunk as u64;
        self.sink_expected.store(total, Ordering::Release);
        let (session, _) = self.dial(SINK).await?;
        self.wait_for("tentacle protocol open", session.id, SINK, true)
            .await?;
        let payload = Bytes::from(vec![0x5a_u8; chunk]);
        let meter = Meter::start();
        let received = within(transfer_timeout(total), "tentacle transfer", async {
            for _ in 0..chunks {
                while session.pending_data_size() > SEND_HIGH_WATER {
                    if session.closed() {
                        return Err(format!(
                            "tentacle: session closed: {:?}",
                            self.events.try_recv()
                        )
                        .into());
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                // A killed session would otherwise only show as a timeout.
                if let Ok(ClientEvent::Error(e)) = self.events.try_recv() {
                    return Err(format!("tentacle: {e}").into());
                }
                self.client
                    .send_message_to(session.id, SINK, payload.clone())
                    .await
                    .map_err(|e| format!("tentacle send: {e:?}"))?;
            }
            let received = self
                .sink_reports
                .recv()
                .await
                .ok_or("tentacle: sink stopped")?;
            Ok::<_, BoxError>(received)
        })
        .await??;
        let transfer = meter.stop();
        if received != total {
            return Err(format!("tentacle: sent {total} bytes, the server got {received}").into());
        }
        self.close(session.id).await?;
        Ok(transfer)
    }

    async fn setup(&mut self) -> Result<SetupSample> {
        let start = Instant::now();
        let (session, opened_at) = self.dial(ECHO).await?;
        let protocol_at = self
            .wait_for("tentacle protocol open", session.id, ECHO, true)
            .await?;
        within(
            STEP_TIMEOUT,
            "tentacle send",
            self.client
                .send_message_to(session.id, ECHO, Bytes::from_static(b"x")),
        )
        .await?
        .map_err(|e| format!("tentacle send: {e:?}"))?;
        let echo_at = self
            .wait_for("tentacle echo", session.id, ECHO, false)
            .await?;
        self.close(session.id).await?;
        Ok(SetupSample {
            connected: opened_at.duration_since(start),
            protocol_open: protocol_at.duration_since(start),
            first_echo: echo_at.duration_since(start),
        })
    }
}

impl Stack for TentacleStack {
    fn describe(&self) -> Description {
        Description {
            name: "tentacle".to_owned(),
            version: format!(
                "tentacle {} (secio {})",
                env!("VERSION_TENTACLE"),
                env!("VERSION_TENTACLE_SECIO")
            ),
            cipher: "AES-128-GCM (OpenSSL), P-256 ECDH, secp256k1 keys".to_owned(),
            bulk_api: "`send_message_to` messages to a `ServiceProtocol`".to_owned(),
        }
    }

    fn bulk_once(&mut self, chunks: u64, chunk: usize) -> BoxFuture<'_, Result<Transfer>> {
        Box::pin(self.bulk(chunks, chunk))
    }

    fn setup_once(&mut self) -> BoxFuture<'_, Result<SetupSample>> {
        Box::pin(self.setup())
    }
}
