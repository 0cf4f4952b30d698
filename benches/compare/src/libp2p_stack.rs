//! rust-libp2p with its usual TCP stack: `SwarmBuilder` with TCP
//! (`TCP_NODELAY` on, also libp2p-tcp's default), Noise
//! (`Noise_XX_25519_ChaChaPoly_SHA256`, ed25519 identities) and yamux, and
//! `libp2p-stream` as the behaviour: the application opens a negotiated
//! stream with `Control::open_stream` and uses it as `AsyncRead +
//! AsyncWrite`, the server takes inbound ones from `Control::accept`.
//!
//! A swarm is owned by the task that polls it, so the client's swarm task
//! takes dial and disconnect commands over a channel and answers a dial
//! when `SwarmEvent::ConnectionEstablished` arrives.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt, future::BoxFuture};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder, noise,
    swarm::{SwarmEvent, dial_opts::DialOpts},
    tcp, yamux,
};
use libp2p_stream as stream;
use tokio::sync::{mpsc, oneshot};

use crate::common::{
    BoxError, Description, ECHO_PROTOCOL, Meter, Result, SINK_PROTOCOL, STEP_TIMEOUT, SetupSample,
    Stack, Transfer, transfer_timeout, wait_until, within,
};

/// The bulk protocol.
const SINK: StreamProtocol = StreamProtocol::new(SINK_PROTOCOL);
/// The echo protocol.
const ECHO: StreamProtocol = StreamProtocol::new(ECHO_PROTOCOL);

/// How long a connection without streams stays open; long enough that the
/// swarm never closes one the bench is about to use.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the bench asks of the client's swarm task.
enum Command {
    /// Dial `peer` at `addr`; answer with the time the connection was
    /// established.
    Dial {
        peer: PeerId,
        addr: Multiaddr,
        done: oneshot::Sender<std::result::Result<Instant, String>>,
    },
    /// Close every connection to `peer`.
    Disconnect { peer: PeerId },
}

/// A libp2p server and client in this process.
pub struct Libp2pStack {
    commands: mpsc::Sender<Command>,
    control: stream::Control,
    server_peer: PeerId,
    server_addr: Multiaddr,
    sink_reports: mpsc::Receiver<u64>,
    client_connections: Arc<AtomicUsize>,
    server_connections: Arc<AtomicUsize>,
}

/// A swarm with TCP, Noise, yamux and the stream behaviour.
fn build_swarm() -> Result<Swarm<stream::Behaviour>> {
    Ok(SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| stream::Behaviour::new())?
        .with_swarm_config(|config| config.with_idle_connection_timeout(IDLE_TIMEOUT))
        .build())
}

impl Libp2pStack {
    /// Starts a server listening on 127.0.0.1 and a client.
    pub async fn start() -> Result<Libp2pStack> {
        let mut server = build_swarm()?;
        let server_peer = *server.local_peer_id();
        let mut server_control = server.behaviour().new_control();
        let (report_tx, sink_reports) = mpsc::channel(16);
        tokio::spawn(serve_sink(server_control.accept(SINK)?, report_tx));
        tokio::spawn(serve_echo(server_control.accept(ECHO)?));
        server.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
        let server_addr = within(STEP_TIMEOUT, "libp2p listen", async {
            loop {
                if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
                    return address;
                }
            }
        })
        .await?;
        let server_connections = Arc::new(AtomicUsize::new(0));
        tokio::spawn(drive_server(server, server_connections.clone()));

        let client = build_swarm()?;
        let control = client.behaviour().new_control();
        let (commands, commands_rx) = mpsc::channel(16);
        let client_connections = Arc::new(AtomicUsize::new(0));
        tokio::spawn(drive_client(
            client,
            commands_rx,
            client_connections.clone(),
        ));

        Ok(Libp2pStack {
            commands,
            control,
            server_peer,
            server_addr,
            sink_reports,
            client_connections,
            server_connections,
        })
    }

    /// Dials the server; returns when the connection is established.
    async fn dial(&self) -> Result<Instant> {
        let (done, answer) = oneshot::channel();
        let command = Command::Dial {
            peer: self.server_peer,
            addr: self.server_addr.clone(),
            done,
        };
        within(STEP_TIMEOUT, "libp2p dial", async {
            self.commands
                .send(command)
                .await
                .map_err(|_| "libp2p: client swarm stopped")?;
            let at = answer
                .await
                .map_err(|_| "libp2p: client swarm stopped")?
                .map_err(|e| format!("libp2p dial: {e}"))?;
            Ok::<_, BoxError>(at)
        })
        .await?
    }

    /// Opens a stream of `protocol` to the server.
    async fn open(&mut self, protocol: StreamProtocol) -> Result<libp2p::Stream> {
        Ok(within(
            STEP_TIMEOUT,
            "libp2p open_stream",
            self.control.open_stream(self.server_peer, protocol),
        )
        .await??)
    }

    /// Closes the connection and waits until neither swarm has one left.
    async fn close(&self) -> Result<()> {
        within(
            STEP_TIMEOUT,
            "libp2p disconnect",
            self.commands.send(Command::Disconnect {
                peer: self.server_peer,
            }),
        )
        .await?
        .map_err(|_| "libp2p: client swarm stopped")?;
        let (client, server) = (
            self.client_connections.clone(),
            self.server_connections.clone(),
        );
        wait_until("libp2p connections closed", move || {
            client.load(Ordering::Acquire) == 0 && server.load(Ordering::Acquire) == 0
        })
        .await
    }

    async fn bulk(&mut self, chunks: u64, chunk: usize) -> Result<Transfer> {
        self.dial().await?;
        let mut stream = self.open(SINK).await?;
        let total = chunks * chunk as u64;
        let buf = vec![0x5a_u8; chunk];
        let meter = Meter::start();
        let received = within(transfer_timeout(total), "libp2p transfer", async {
            for _ in 0..chunks {
                stream.write_all(&buf).await?;
            }
            stream.close().await?;
            let received = self
                .sink_reports
                .recv()
                .await
                .ok_or("libp2p: sink stopped")?;
            Ok::<_, BoxError>(received)
        })
        .await??;
        let transfer = meter.stop();
        if received != total {
            return Err(format!("libp2p: sent {total} bytes, the server got {received}").into());
        }
        drop(stream);
        self.close().await?;
        Ok(transfer)
    }

    async fn setup(&mut self) -> Result<SetupSample> {
        let start = Instant::now();
        let connected_at = self.dial().await?;
        let mut stream = self.open(ECHO).await?;
        let protocol_open = start.elapsed();
        let mut byte = [0u8; 1];
        within(STEP_TIMEOUT, "libp2p echo", async {
            stream.write_all(b"x").await?;
            stream.flush().await?;
            stream.read_exact(&mut byte).await
        })
        .await??;
        let first_echo = start.elapsed();
        drop(stream);
        self.close().await?;
        Ok(SetupSample {
            connected: connected_at.duration_since(start),
            protocol_open,
            first_echo,
        })
    }
}

impl Stack for Libp2pStack {
    fn describe(&self) -> Description {
        Description {
            name: "rust-libp2p".to_owned(),
            version: format!(
                "libp2p {} (noise {}, stream {})",
                env!("VERSION_LIBP2P"),
                env!("VERSION_LIBP2P_NOISE"),
                env!("VERSION_LIBP2P_STREAM")
            ),
            cipher: "ChaCha20-Poly1305 (ring), Noise_XX_25519_ChaChaPoly_SHA256".to_owned(),
            bulk_api: "`libp2p-stream` `open_stream`, `AsyncWrite`".to_owned(),
        }
    }

    fn bulk_once(&mut self, chunks: u64, chunk: usize) -> BoxFuture<'_, Result<Transfer>> {
        Box::pin(self.bulk(chunks, chunk))
    }

    fn setup_once(&mut self) -> BoxFuture<'_, Result<SetupSample>> {
        Box::pin(self.setup())
    }
}

/// Polls the client swarm and carries out the bench's commands.
async fn drive_client(
    mut swarm: Swarm<stream::Behaviour>,
    mut commands: mpsc::Receiver<Command>,
    connections: Arc<AtomicUsize>,
) {
    let mut dialing = None;
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(Command::Dial { peer, addr, done }) => {
                    let opts = DialOpts::peer_id(peer).addresses(vec![addr]).build();
                    match swarm.dial(opts) {
                        Ok(()) => dialing = Some(done),
                        Err(e) => {
                            let _ = done.send(Err(e.to_string()));
                        }
                    }
                }
                Some(Command::Disconnect { peer }) => {
                    let _ = swarm.disconnect_peer_id(peer);
                }
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { endpoint, .. } => {
                    let at = Instant::now();
                    connections.fetch_add(1, Ordering::AcqRel);
                    if endpoint.is_dialer()
                        && let Some(done) = dialing.take()
                    {
                        let _ = done.send(Ok(at));
                    }
                }
                SwarmEvent::ConnectionClosed { .. } => {
                    connections.fetch_sub(1, Ordering::AcqRel);
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    if let Some(done) = dialing.take() {
                        let _ = done.send(Err(error.to_string()));
                    }
                }
                _ => {}
            },
        }
    }
}

/// Polls the server swarm, counting its connections.
async fn drive_server(mut swarm: Swarm<stream::Behaviour>, connections: Arc<AtomicUsize>) {
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::ConnectionEstablished { .. } => {
                connections.fetch_add(1, Ordering::AcqRel);
            }
            SwarmEvent::ConnectionClosed { .. } => {
                connections.fetch_sub(1, Ordering::AcqRel);
            }
            _ => {}
        }
    }
}

/// Server side of the sink: every inbound stream is read to its end and
/// its byte count reported.
async fn serve_sink(mut incoming: stream::IncomingStreams, report: mpsc::Sender<u64>) {
    while let Some((_, mut stream)) = incoming.next().await {
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

/// Server side of the echo: every inbound stream is copied back to itself
/// until its end.
async fn serve_echo(mut incoming: stream::IncomingStreams) {
    while let Some((_, mut stream)) = incoming.next().await {
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
