//! Two peers over transport + secio + yamux run 100 concurrent streams, each
//! echoing 1 MiB with every byte verified: over TCP loopback and over the
//! in-memory network.

#![allow(clippy::unwrap_used)]

use shoal_identity::Keypair;
use shoal_integration::{STEP_TIMEOUT, connect, echo_many, start_echo_node};
use shoal_transport::{MemoryNetwork, MemoryTransport, TcpTransport, Transport};

const STREAMS: usize = 100;
const BYTES_PER_STREAM: usize = 1024 * 1024;

async fn hundred_streams<T: Transport>(transport: T, listen: &str) {
    let server_key = Keypair::generate();
    let node = start_echo_node(
        &transport,
        listen,
        shoal_secio::Config::new(server_key.clone()),
        shoal_yamux::Config::default(),
    )
    .await;
    let client = connect(
        &transport,
        &node.full_addr(),
        Keypair::generate(),
        Some(server_key.peer_id()),
        shoal_yamux::Config::default(),
    )
    .await
    .unwrap();
    assert_eq!(client.remote, server_key.peer_id());
    tokio::time::timeout(
        STEP_TIMEOUT,
        echo_many(&client.control, STREAMS, BYTES_PER_STREAM),
    )
    .await
    .expect("echo finished in time")
    .unwrap();
    // Every stream was echoed to completion on the server side, too.
    let echoed = || shoal_integration::NodeStats::get(&node.stats.streams_echoed);
    for _ in 0..100 {
        if echoed() == STREAMS {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(echoed(), STREAMS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_streams_over_tcp() {
    hundred_streams(TcpTransport::default(), "/ip4/127.0.0.1/tcp/0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_streams_over_memory() {
    let network = MemoryNetwork::new();
    hundred_streams(MemoryTransport::new(&network), "/memory/0").await;
}
