//! Shoal through its service layer (`shoal`), two ways an application can
//! move data on a protocol:
//!
//! - [`Api::RawStream`]: a protocol declared with
//!   `ProtocolMetaBuilder::raw_streams`; the client opens a negotiated
//!   substream with `ServiceControl::open_raw_stream` and writes to it like
//!   a socket (`AsyncWrite`), the server reads it from `RawStreams`. No
//!   framing, no queue between the application and yamux: the fastest public
//!   path for bulk data, and the one compared.
//! - [`Api::Messages`]: length-delimited frames sent with
//!   `ServiceControl::send` and delivered to a per-session handler
//!   (`SessionProtocol`), the message API that compares with tentacle's.
//!
//! Both nodes use the TCP transport with its defaults (`TCP_NODELAY` on)
//! and the default secio suite preference.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use bytes::Bytes;
use futures::future::BoxFuture;
use shoal::{
    DialOptions, HandlerResult, Multiaddr, ProtocolContextMut, ProtocolEvent, ProtocolEvents,
    ProtocolId, ProtocolMeta, RawStream, RawStreams, ServiceBuilder, ServiceControl, SessionInfo,
    SessionProtocol, TargetProtocols,
};
use shoal_identity::Keypair;
use shoal_secio::CipherSuite;
use shoal_transport::TcpTransport;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::mpsc,
};

use crate::common::{
    BoxError, Description, ECHO_PROTOCOL, Meter, Result, SINK_PROTOCOL, STEP_TIMEOUT, SetupSample,
    Stack, Transfer, transfer_timeout, wait_until, within,
};

/// Raw-stream sink: the server reads to EOF and reports the byte count.
const RAW_SINK: ProtocolId = ProtocolId(1);
/// Raw-stream echo: the server writes back everything it reads.
const RAW_ECHO: ProtocolId = ProtocolId(2);
/// Message sink: the server counts the payload bytes of frames.
const MSG_SINK: ProtocolId = ProtocolId(3);
/// Message echo: the server replies with every frame.
const MSG_ECHO: ProtocolId = ProtocolId(4);

/// Which public API the stack instance uses for its protocol traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// Negotiated raw substreams (`AsyncRead + AsyncWrite`).
    RawStream,
    /// Length-delimited messages through `ServiceControl::send` and handlers.
    Messages,
}

/// A Shoal server and client in this process, and what the bench needs to
/// watch them.
pub struct ShoalStack {
    api: Api,
    server: ServiceControl,
    client: ServiceControl,
    addr: Multiaddr,
    /// Byte counts reported by the server's sinks (raw and message).
    sink_reports: mpsc::Receiver<u64>,
    /// Bytes the message sink waits for before reporting (set per run).
    msg_expected: Arc<AtomicU64>,
    /// Client-side events of the message echo protocol.
    echo_events: ProtocolEvents,
    /// Client-side events of the message sink protocol.
    sink_events: ProtocolEvents,
    /// The client's inbound raw streams (none arrive; kept so the
    /// protocols stay registered).
    _client_raw: Vec<RawStreams>,
}

/// Per-session server handler of [`MSG_SINK`]: counts payload bytes and
/// reports once the expected number has arrived.
struct MessageSink {
    received: u64,
    expected: Arc<AtomicU64>,
    report: mpsc::Sender<u64>,
}

impl SessionProtocol for MessageSink {
    fn received(&mut self, _ctx: &mut ProtocolContextMut<'_>, data: Bytes) -> HandlerResult {
        self.received += data.len() as u64;
        if self.received == self.expected.load(Ordering::Acquire) {
            // The bench waits on this report; a full queue cannot happen
            // (one report per run, read before the next run).
            let _ = self.report.try_send(self.received);
        }
        Ok(())
    }
}

/// Per-session server handler of [`MSG_ECHO`].
struct MessageEcho;

impl SessionProtocol for MessageEcho {
    fn received(&mut self, ctx: &mut ProtocolContextMut<'_>, data: Bytes) -> HandlerResult {
        ctx.reply(data)?;
        Ok(())
    }
}

impl ShoalStack {
    /// Starts a server listening on 127.0.0.1 and a client, both with the
    /// four bench protocols; `api` selects which pair the bench uses.
    pub async fn start(api: Api) -> Result<ShoalStack> {
        let (report_tx, sink_reports) = mpsc::channel(16);
        let msg_expected = Arc::new(AtomicU64::new(u64::MAX));

        let (raw_sink_meta, raw_sink) =
            ProtocolMeta::builder(RAW_SINK, raw_name(SINK_PROTOCOL)).raw_streams();
        let (raw_echo_meta, raw_echo) =
            ProtocolMeta::builder(RAW_ECHO, raw_name(ECHO_PROTOCOL)).raw_streams();
        let msg_sink_meta = {
            let expected = msg_expected.clone();
            let report = report_tx.clone();
            ProtocolMeta::builder(MSG_SINK, SINK_PROTOCOL).session_handle(move || MessageSink {
                received: 0,
                expected: expected.clone(),
                report: report.clone(),
            })
        };
        // The setup figure dials one address hundreds of times a second:
        // the admission rate limits (which the other stacks do not have)
        // are lifted so they do not decide the figure.
        let server = ServiceBuilder::new(Keypair::generate())
            .transport(TcpTransport::default())
            .handshake_rate_per_ip(u32::MAX)
            .protocol(raw_sink_meta)
            .protocol(raw_echo_meta)
            .protocol(msg_sink_meta)
            .protocol(ProtocolMeta::builder(MSG_ECHO, ECHO_PROTOCOL).session_handle(|| MessageEcho))
            .build()?;
        let server_control = server.control();
        tokio::spawn(server);
        tokio::spawn(serve_raw_sink(raw_sink, report_tx));
        tokio::spawn(serve_raw_echo(raw_echo));
        let addr = within(
            STEP_TIMEOUT,
            "shoal listen",
            server_control.listen("/ip4/127.0.0.1/tcp/0".parse()?),
        )
        .await??;

        let (client_raw_sink, client_sink_streams) =
            ProtocolMeta::builder(RAW_SINK, raw_name(SINK_PROTOCOL)).raw_streams();
        let (client_raw_echo, client_echo_streams) =
            ProtocolMeta::builder(RAW_ECHO, raw_name(ECHO_PROTOCOL)).raw_streams();
        let (client_msg_sink, sink_events) =
            ProtocolMeta::builder(MSG_SINK, SINK_PROTOCOL).event_stream();
        let (client_msg_echo, echo_events) =
            ProtocolMeta::builder(MSG_ECHO, ECHO_PROTOCOL).event_stream();
        let client = ServiceBuilder::new(Keypair::generate())
            .transport(TcpTransport::default())
            .dials_per_addr_burst(u32::MAX)
            .protocol(client_raw_sink)
            .protocol(client_raw_echo)
            .protocol(client_msg_sink)
            .protocol(client_msg_echo)
            .build()?;
        let client_control = client.control();
        tokio::spawn(client);

        Ok(ShoalStack {
            api,
            server: server_control,
            client: client_control,
            addr,
            sink_reports,
            msg_expected,
            echo_events,
            sink_events,
            _client_raw: vec![client_sink_streams, client_echo_streams],
        })
    }

    /// Dials the server, opening `protocols` once the session is up.
    async fn dial(&self, protocols: TargetProtocols) -> Result<Arc<SessionInfo>> {
        let options = DialOptions::default().protocols(protocols);
        Ok(within(
            STEP_TIMEOUT,
            "shoal dial",
            self.client.dial(self.addr.clone(), options),
        )
        .await??
        .session)
    }

    /// Opens a raw substream of `protocol` on `session`.
    async fn open_raw(&self, session: &SessionInfo, protocol: ProtocolId) -> Result<RawStream> {
        Ok(within(
            STEP_TIMEOUT,
            "shoal open_raw_stream",
            self.client.open_raw_stream(session.id, protocol),
        )
        .await??)
    }

    /// Closes `session` and waits until neither node has a session left.
    async fn close(&self, session: &SessionInfo) -> Result<()> {
        within(
            STEP_TIMEOUT,
            "shoal disconnect",
            self.client.disconnect(session.id),
        )
        .await??;
        let (client, server) = (self.client.clone(), self.server.clone());
        wait_until("shoal sessions closed", move || {
            client.sessions().is_empty() && server.sessions().is_empty()
        })
        .await
    }

    async fn bulk_raw(&mut self, chunks: u64, chunk: usize) -> Result<Transfer> {
        let session = self.dial(TargetProtocols::None).await?;
        let mut stream = self.open_raw(&session, RAW_SINK).await?;
        let total = chunks * chunk as u64;
        let buf = vec![0x5a_u8; chunk];
        let meter = Meter::start();
        let received = within(transfer_timeout(total), "shoal raw transfer", async {
            for _ in 0..chunks {
                stream.write_all(&buf).await?;
            }
            stream.shutdown().await?;
            let received = self
                .sink_reports
                .recv()
                .await
                .ok_or("shoal: raw sink stopped")?;
            Ok::<_, BoxError>(received)
        })
        .await??;
        let transfer = meter.stop();
        check_count("shoal raw", received, total)?;
        drop(stream);
        self.close(&session).await?;
        Ok(transfer)
    }

    async fn bulk_messages(&mut self, chunks: u64, chunk: usize) -> Result<Transfer> {
        let total = chunks * chunk as u64;
        self.msg_expected.store(total, Ordering::Release);
        let session = self.dial(TargetProtocols::Only(vec![MSG_SINK])).await?;
        wait_connected(&mut self.sink_events, &session).await?;
        let payload = Bytes::from(vec![0x5a_u8; chunk]);
        let meter = Meter::start();
        let received = within(transfer_timeout(total), "shoal message transfer", async {
            for _ in 0..chunks {
                self.client
                    .send(session.id, MSG_SINK, payload.clone())
                    .await?;
            }
            let received = self
                .sink_reports
                .recv()
                .await
                .ok_or("shoal: message sink stopped")?;
            Ok::<_, BoxError>(received)
        })
        .await??;
        let transfer = meter.stop();
        check_count("shoal messages", received, total)?;
        self.close(&session).await?;
        Ok(transfer)
    }

    async fn setup_raw(&mut self) -> Result<SetupSample> {
        let start = Instant::now();
        let session = self.dial(TargetProtocols::None).await?;
        let connected = start.elapsed();
        let mut stream = self.open_raw(&session, RAW_ECHO).await?;
        let protocol_open = start.elapsed();
        let mut byte = [0u8; 1];
        within(STEP_TIMEOUT, "shoal raw echo", async {
            stream.write_all(b"x").await?;
            stream.flush().await?;
            stream.read_exact(&mut byte).await
        })
        .await??;
        let first_echo = start.elapsed();
        drop(stream);
        self.close(&session).await?;
        Ok(SetupSample {
            connected,
            protocol_open,
            first_echo,
        })
    }

    async fn setup_messages(&mut self) -> Result<SetupSample> {
        let start = Instant::now();
        let session = self.dial(TargetProtocols::Only(vec![MSG_ECHO])).await?;
        let connected = start.elapsed();
        wait_connected(&mut self.echo_events, &session).await?;
        let protocol_open = start.elapsed();
        within(
            STEP_TIMEOUT,
            "shoal send",
            self.client
                .send(session.id, MSG_ECHO, Bytes::from_static(b"x")),
        )
        .await??;
        within(STEP_TIMEOUT, "shoal message echo", async {
            while let Some(event) = self.echo_events.recv().await {
                if let ProtocolEvent::Received { session: s, .. } = event
                    && s.id == session.id
                {
                    return Ok(());
                }
            }
            Err(BoxError::from("shoal: client stopped"))
        })
        .await??;
        let first_echo = start.elapsed();
        self.close(&session).await?;
        Ok(SetupSample {
            connected,
            protocol_open,
            first_echo,
        })
    }
}

impl Stack for ShoalStack {
    fn describe(&self) -> Description {
        let suite = CipherSuite::default_preference()
            .first()
            .copied()
            .unwrap_or(CipherSuite::ChaChaPoly);
        let cipher = match suite {
            CipherSuite::AesGcm => "AES-256-GCM (ring)",
            CipherSuite::ChaChaPoly => "ChaCha20-Poly1305 (ring)",
        };
        let (name, bulk_api) = match self.api {
            Api::RawStream => (
                "Shoal (raw stream)",
                "`open_raw_stream` substream, `AsyncWrite`",
            ),
            Api::Messages => (
                "Shoal (messages)",
                "`ServiceControl::send` frames to a `SessionProtocol`",
            ),
        };
        Description {
            name: name.to_owned(),
            version: format!("shoal-p2p {}", env!("VERSION_SHOAL")),
            cipher: format!("{cipher}, {}", suite.noise_name()),
            bulk_api: bulk_api.to_owned(),
        }
    }

    fn bulk_once(&mut self, chunks: u64, chunk: usize) -> BoxFuture<'_, Result<Transfer>> {
        Box::pin(async move {
            match self.api {
                Api::RawStream => self.bulk_raw(chunks, chunk).await,
                Api::Messages => self.bulk_messages(chunks, chunk).await,
            }
        })
    }

    fn setup_once(&mut self) -> BoxFuture<'_, Result<SetupSample>> {
        Box::pin(async move {
            match self.api {
                Api::RawStream => self.setup_raw().await,
                Api::Messages => self.setup_messages().await,
            }
        })
    }
}

/// Raw protocols need names distinct from the message protocols.
fn raw_name(name: &str) -> String {
    format!("{name}/raw")
}

/// Fails unless the receiver got exactly what was sent.
fn check_count(what: &str, received: u64, sent: u64) -> Result<()> {
    if received == sent {
        Ok(())
    } else {
        Err(format!("{what}: sent {sent} bytes, the server got {received}").into())
    }
}

/// Waits for the protocol of `events` to open on `session`, skipping events
/// left over from earlier sessions.
async fn wait_connected(events: &mut ProtocolEvents, session: &SessionInfo) -> Result<()> {
    within(STEP_TIMEOUT, "shoal protocol open", async {
        while let Some(event) = events.recv().await {
            if let ProtocolEvent::Connected { session: s, .. } = event
                && s.id == session.id
            {
                return Ok(());
            }
        }
        Err(BoxError::from("shoal: client stopped"))
    })
    .await?
}

/// Server side of the raw sink: every inbound stream is read to its end
/// and its byte count reported.
async fn serve_raw_sink(mut streams: RawStreams, report: mpsc::Sender<u64>) {
    while let Some(mut stream) = streams.accept().await {
        let report = report.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            let mut received = 0u64;
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => received += n as u64,
                    Err(_) => return,
                }
            }
            let _ = report.send(received).await;
        });
    }
}

/// Server side of the raw echo: every inbound stream is copied back to
/// itself until its end.
async fn serve_raw_echo(mut streams: RawStreams) {
    while let Some(mut stream) = streams.accept().await {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err()
                            || stream.flush().await.is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
    }
}
