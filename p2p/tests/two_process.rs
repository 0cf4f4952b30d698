//! The same API drives two separate processes over TCP: this test binary
//! re-runs itself as a child (selected by an environment variable) that runs
//! an echo service; the parent dials it, exchanges messages and tells it to
//! shut down.
#![allow(clippy::unwrap_used)]

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use shoal::{
    DialOptions, HandlerResult, Multiaddr, ProtocolContextMut, ProtocolEvent, ProtocolId,
    ProtocolMeta, ServiceBuilder, ServiceProtocol,
};
use shoal_identity::Keypair;

const ECHO: ProtocolId = ProtocolId(1);
const CHILD_ENV: &str = "SHOAL_P2P_TWO_PROCESS_CHILD";
const LISTEN_PREFIX: &str = "SHOAL_LISTEN ";
const STEP: Duration = Duration::from_secs(10);

/// Echoes frames; on "bye" shuts the whole service down.
struct Echo;
impl ServiceProtocol for Echo {
    fn received(&mut self, ctx: &mut ProtocolContextMut<'_>, data: Bytes) -> HandlerResult {
        if data == "bye" {
            ctx.control().try_shutdown();
            return Ok(());
        }
        ctx.reply(data)?;
        Ok(())
    }
}

/// The child's body; a no-op unless started by the parent.
#[test]
fn child_node() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let service = ServiceBuilder::new(Keypair::generate())
            .protocol(ProtocolMeta::builder(ECHO, "/echo").service_handle(Echo))
            .build()
            .unwrap();
        let control = service.control();
        let running = tokio::spawn(service);
        let addr = control
            .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .await
            .unwrap();
        println!(
            "{LISTEN_PREFIX}{}",
            addr.with_peer_id(control.local_peer_id())
        );
        // Ends when the parent says "bye" (bounded in case it never does).
        tokio::time::timeout(Duration::from_secs(30), running)
            .await
            .unwrap()
            .unwrap();
    });
}

#[test]
fn two_processes_over_tcp() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_node", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // The harness may print "test child_node ... " on the same line.
            if let Some(at) = line.find(LISTEN_PREFIX) {
                let _ = tx.send(line[at + LISTEN_PREFIX.len()..].trim().to_owned());
            }
        }
    });
    let addr: Multiaddr = match rx.recv_timeout(STEP) {
        Ok(addr) => addr.parse().unwrap(),
        Err(e) => {
            let _ = child.kill();
            panic!("child did not report its address: {e}");
        }
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (meta, mut events) = ProtocolMeta::builder(ECHO, "/echo").event_stream();
        let service = ServiceBuilder::new(Keypair::generate())
            .protocol(meta)
            .build()
            .unwrap();
        let control = service.control();
        tokio::spawn(service);
        let session =
            tokio::time::timeout(STEP, control.dial(addr.clone(), DialOptions::default()))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(Some(session.peer), addr.peer_id());
        let mut next = async || {
            tokio::time::timeout(STEP, events.recv())
                .await
                .unwrap()
                .unwrap()
        };
        assert!(matches!(next().await, ProtocolEvent::Connected { .. }));
        for i in 0..50u32 {
            let msg = format!("message {i}");
            control.send(session.id, ECHO, msg.clone()).await.unwrap();
            match next().await {
                ProtocolEvent::Received { data, .. } => assert_eq!(data, msg),
                other => panic!("unexpected {other:?}"),
            }
        }
        control.send(session.id, ECHO, "bye").await.unwrap();
        // The child shuts down gracefully: we see the protocol close.
        assert!(matches!(next().await, ProtocolEvent::Disconnected { .. }));
        tokio::time::timeout(STEP, control.shutdown())
            .await
            .unwrap();
    });

    let deadline = Instant::now() + STEP;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "child failed: {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("child did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
