//! Shoal's main demo, in two parts, printing what happens:
//!
//! 1. two nodes on loopback complete a secure handshake and echo data over
//!    many multiplexed streams;
//! 2. a short scripted conversation: six messengers form a small network on
//!    loopback, alice and bob find each other through its DHT by user id
//!    and exchange a few lines with delivery and read receipts, and both
//!    histories are printed and checked to be identical.
//!
//! ```sh
//! cargo run --release -p shoal-examples --bin demo
//! cargo run --release -p shoal-examples --bin demo -- --streams 64 --kib 4096
//! ```

mod common;

use common::clock;
use std::time::{Duration, Instant};

use clap::Parser;
use shoal_identity::{Keypair, PeerId};
use shoal_im::engine::HistoryItem;
use shoal_im::{MemoryStore, MessageId, UserId};
use shoal_messenger::{Event, Messenger, MessengerConfig};
use shoal_transport::{Listener, ListenerExt, Multiaddr, TcpTransport, Transport};
use shoal_yamux::{Control, Driver, Mode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

#[derive(Parser, Debug)]
#[command(about = "Two Shoal nodes on loopback: secure handshake, then many echoed streams")]
struct Args {
    /// Number of concurrent streams.
    #[arg(long, default_value_t = 32)]
    streams: usize,
    /// KiB echoed on each stream.
    #[arg(long, default_value_t = 1024)]
    kib: usize,
    /// Address node A listens on.
    #[arg(long, default_value = "/ip4/127.0.0.1/tcp/0")]
    listen: Multiaddr,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let transport = TcpTransport::default();

    // Node A: an identity, a listener, and an accept loop that echoes every
    // stream of every connection.
    let a_key = Keypair::generate();
    let a_id = a_key.peer_id();
    let mut listener = transport.listen(&args.listen).await?;
    let a_addr = listener.local_addr().with_peer_id(a_id);
    println!("node A  {a_id}");
    println!("        listening on {a_addr}");
    let a_secio = shoal_secio::Config::new(a_key);
    tokio::spawn(async move {
        while let Ok(inbound) = listener.accept().await {
            let secio = a_secio.clone();
            tokio::spawn(async move {
                match shoal_secio::handshake_inbound(inbound.connection, &secio).await {
                    Ok(secure) => {
                        println!(
                            "node A  accepted {} from {}",
                            secure.remote_peer(),
                            inbound.remote_addr
                        );
                        serve_echo(secure).await;
                    }
                    Err(e) => println!(
                        "node A  refused a connection from {}: {e}",
                        inbound.remote_addr
                    ),
                }
            });
        }
    });

    // Node B dials A, insisting on A's peer id.
    let b_key = Keypair::generate();
    println!("node B  {}", b_key.peer_id());
    let b_secio = shoal_secio::Config::new(b_key);
    let started = Instant::now();
    let connection = transport.dial(&a_addr).await?;
    let secure = shoal_secio::handshake_outbound(connection, &b_secio, a_addr.peer_id()).await?;
    println!(
        "node B  secure channel to {} in {:.2} ms ({})",
        secure.remote_peer(),
        ms(started.elapsed()),
        secure.cipher_suite().noise_name()
    );
    let (driver, control) = Driver::new(secure, shoal_yamux::Config::default(), Mode::Client);
    let driver = tokio::spawn(driver);

    // Many streams at once, every byte checked on the way back.
    let bytes = args.kib * 1024;
    println!(
        "node B  opening {} streams, echoing {} KiB on each",
        args.streams, args.kib
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..args.streams {
        let control = control.clone();
        tasks.push(tokio::spawn(async move {
            echo_stream(&control, n as u8, bytes).await
        }));
    }
    for (n, task) in tasks.into_iter().enumerate() {
        let took = task.await??;
        if n < 4 || n + 1 == args.streams {
            println!(
                "        stream {n:>3}: {} KiB echoed and verified in {:.1} ms",
                args.kib,
                ms(took)
            );
        } else if n == 4 {
            println!("        ...");
        }
    }
    let elapsed = started.elapsed();
    let total_mib = (bytes * args.streams) as f64 / (1024.0 * 1024.0);
    println!(
        "node B  {} streams, {total_mib:.0} MiB each way, all verified in {:.0} ms ({:.0} MiB/s each way)",
        args.streams,
        ms(elapsed),
        total_mib / elapsed.as_secs_f64()
    );
    println!("        live streams now: {}", control.num_streams());

    // Whoever dials a known peer id and meets another key aborts.
    let wrong: PeerId = Keypair::generate().peer_id();
    let connection = transport.dial(&a_addr).await?;
    match shoal_secio::handshake_outbound(connection, &b_secio, Some(wrong)).await {
        Ok(_) => return Err("a dial expecting the wrong peer id succeeded".into()),
        Err(e) => println!("node B  dial expecting the wrong peer id was refused: {e}"),
    }

    // GoAway: no new streams. The echo server never answers with its own
    // GoAway (its accept loop cannot tell), so the connection would only
    // end when the process does; give the frame a moment to leave.
    control.close();
    let _ = tokio::time::timeout(Duration::from_millis(100), driver).await;

    println!();
    conversation().await?;
    println!("done");
    Ok(())
}

/// Echoes every inbound stream of one connection until it closes.
async fn serve_echo<T>(secure: T)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (driver, control) = Driver::new(secure, shoal_yamux::Config::default(), Mode::Server);
    tokio::spawn(driver);
    while let Ok(stream) = control.accept_stream().await {
        tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(stream);
            if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                let _ = w.shutdown().await;
            }
        });
    }
}

/// Writes `len` bytes derived from `seed` on a new stream while reading the
/// echo, and checks every byte.
async fn echo_stream(control: &Control, seed: u8, len: usize) -> Result<Duration, Error> {
    let started = Instant::now();
    let stream = control.open_stream().await?;
    let (mut r, mut w) = tokio::io::split(stream);
    let byte = move |i: usize| (i as u8).wrapping_mul(31).wrapping_add(seed);
    let writer = async move {
        let chunk: Vec<u8> = (0..64 * 1024).map(byte).collect();
        let mut sent = 0;
        while sent < len {
            let n = (len - sent).min(chunk.len());
            w.write_all(&chunk[..n]).await?;
            sent += n;
        }
        w.shutdown().await?;
        Ok::<_, Error>(())
    };
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            // The pattern repeats every 64 KiB and chunk boundaries line up
            // with it, so offsets modulo 64 KiB index the expected bytes.
            for (k, b) in buf[..n].iter().enumerate() {
                if *b != byte((got + k) % (64 * 1024)) {
                    return Err(format!("stream {seed}: wrong byte at offset {}", got + k).into());
                }
            }
            got += n;
        }
        if got != len {
            return Err(format!("stream {seed}: {got} bytes back, expected {len}").into());
        }
        Ok::<_, Error>(())
    };
    let (w, r) = tokio::join!(writer, reader);
    w?;
    r?;
    Ok(started.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Messengers in the conversation part's network.
const NETWORK: usize = 6;
/// Longest wait for any one step of the conversation.
const STEP: Duration = Duration::from_secs(10);

/// The scripted conversation: who speaks (0 alice, 1 bob) and what.
const SCRIPT: &[(usize, &str)] = &[
    (0, "Hi Bob! I found you through the DHT."),
    (1, "Hi Alice, your prekeys were there too."),
    (0, "So this is end-to-end encrypted?"),
    (
        1,
        "Double Ratchet, and acked before it counts as delivered.",
    ),
    (0, "Great. Talk soon!"),
];

/// One user of the conversation: the messenger, its events, and the events
/// that arrived while another one was awaited.
struct User {
    name: &'static str,
    messenger: Messenger,
    events: mpsc::Receiver<Event>,
    backlog: Vec<Event>,
}

impl User {
    /// Waits (at most [`STEP`]) for an event `want` accepts.
    async fn wait(&mut self, what: &str, want: impl Fn(&Event) -> bool) -> Result<Event, Error> {
        if let Some(i) = self.backlog.iter().position(&want) {
            return Ok(self.backlog.remove(i));
        }
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) if want(&event) => return Ok(event),
                Ok(Some(event)) => self.backlog.push(event),
                Ok(None) => return Err(format!("{}: the messenger stopped", self.name).into()),
                Err(_) => {
                    return Err(format!("{}: no {what} within {STEP:?}", self.name).into());
                }
            }
        }
    }

    /// The whole conversation with `contact`, oldest first.
    async fn history(&self, contact: UserId) -> Result<Vec<HistoryItem>, Error> {
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.messenger.history(contact, cursor, 100).await?;
            let Some(last) = page.last() else { break };
            cursor = Some((last.meta.height, last.meta.id));
            all.extend(page);
        }
        all.reverse();
        Ok(all)
    }
}

/// Part two: a scripted conversation between two users of a small network.
async fn conversation() -> Result<(), Error> {
    let started = Instant::now();
    println!("conversation: {NETWORK} messengers on loopback, each joining through the first");
    let mut nodes = Vec::new();
    let mut seed: Option<Multiaddr> = None;
    for _ in 0..NETWORK {
        let config = MessengerConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
            bootstrap: seed.iter().cloned().collect(),
            ..MessengerConfig::default()
        };
        let (messenger, events) =
            Messenger::start(MemoryStore::new(), TcpTransport::default(), config).await?;
        if seed.is_none() {
            seed = messenger.listen_addrs().into_iter().next();
        }
        // A messenger answers calls once it has joined the DHT: one at a
        // time keeps the joins from racing each other's dials.
        tokio::time::timeout(STEP, messenger.contacts())
            .await
            .map_err(|_| format!("a messenger did not join within {STEP:?}"))??;
        nodes.push((messenger, events));
    }
    let all: Vec<Messenger> = nodes.iter().map(|(m, _)| m.clone()).collect();
    println!(
        "        all joined the DHT in {:.0} ms",
        ms(started.elapsed())
    );
    let result = talk(&mut nodes).await;
    for messenger in &all {
        let _ = tokio::time::timeout(Duration::from_secs(5), messenger.shutdown()).await;
    }
    result?;
    println!(
        "        conversation finished in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn talk(nodes: &mut Vec<(Messenger, mpsc::Receiver<Event>)>) -> Result<(), Error> {
    // The last two nodes are alice and bob; the others only route.
    let (bob_m, bob_e) = nodes.pop().ok_or("no node for bob")?;
    let (alice_m, alice_e) = nodes.pop().ok_or("no node for alice")?;
    let mut users = [
        User {
            name: "alice",
            messenger: alice_m,
            events: alice_e,
            backlog: Vec::new(),
        },
        User {
            name: "bob",
            messenger: bob_m,
            events: bob_e,
            backlog: Vec::new(),
        },
    ];
    // They exchange their user ids as text (by QR code, say).
    let ids: Vec<String> = users
        .iter()
        .map(|u| u.messenger.user_id().to_string())
        .collect();
    for (user, id) in users.iter().zip(&ids) {
        println!(
            "{:<7} user id {id}, device {}",
            user.name,
            user.messenger.peer_id()
        );
    }
    for (me, other) in [(0, 1), (1, 0)] {
        let contact: UserId = ids[other].parse()?;
        users[me]
            .messenger
            .add_contact(contact, users[other].name)
            .await?;
    }
    let alice: UserId = ids[0].parse()?;
    let bob: UserId = ids[1].parse()?;
    let contact_of = |who: usize| if who == 0 { bob } else { alice };

    for &(from, text) in SCRIPT {
        let to = 1 - from;
        let (sender, receiver) = (users[from].name, users[to].name);
        let sent_at = Instant::now();
        let id = users[from].messenger.send(contact_of(from), text).await?;
        println!("{sender:<7} > {text}");
        let is = |want: &MessageId| {
            let want = *want;
            move |e: &Event| matches!(e, Event::Received { id, .. } if *id == want)
        };
        let Event::Received { message, .. } = users[to].wait("message", is(&id)).await? else {
            return Err("unexpected event".into());
        };
        println!(
            "{receiver:<7}   {sender}: {}   ({:.0} ms)",
            message.text(),
            ms(sent_at.elapsed())
        );
        users[from]
            .wait(
                "delivery receipt",
                |e| matches!(e, Event::Delivered { id: d, .. } if *d == id),
            )
            .await?;
        println!(
            "{sender:<7}   ✓ delivered to {receiver}   ({:.0} ms)",
            ms(sent_at.elapsed())
        );
        users[to]
            .messenger
            .mark_read(contact_of(to), vec![id])
            .await?;
        users[from]
            .wait(
                "read receipt",
                |e| matches!(e, Event::Read { id: r, .. } if *r == id),
            )
            .await?;
        println!(
            "{sender:<7}   ✓✓ read by {receiver}   ({:.0} ms)",
            ms(sent_at.elapsed())
        );
    }

    let mut histories = Vec::new();
    for (me, user) in users.iter().enumerate() {
        let history = user.history(contact_of(me)).await?;
        println!("{}'s history:", user.name);
        for item in &history {
            let who = if item.meta.outgoing {
                "me"
            } else {
                users[1 - me].name
            };
            let mark = match (item.meta.outgoing, item.meta.flags) {
                (true, f) if f.read => " ✓✓",
                (true, f) if f.delivered => " ✓",
                _ => "",
            };
            println!(
                "        [{}] {who}: {}{mark}",
                clock(item.message.timestamp_ms),
                item.message.text()
            );
        }
        // What both sides must agree on: the ids, the messages, the order.
        let shown: Vec<(MessageId, shoal_im::Message)> = history
            .into_iter()
            .map(|item| (item.meta.id, item.message))
            .collect();
        histories.push(shown);
    }
    if histories[0] != histories[1] {
        return Err("alice's and bob's histories differ".into());
    }
    if histories[0].len() != SCRIPT.len() {
        return Err(format!(
            "{} messages in the history, {} sent",
            histories[0].len(),
            SCRIPT.len()
        )
        .into());
    }
    println!(
        "        both histories hold the same {} messages in the same order",
        SCRIPT.len()
    );
    Ok(())
}
