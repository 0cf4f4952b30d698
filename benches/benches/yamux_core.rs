//! The sans-IO yamux core alone: two `Connection`s pumping bulk data into
//! each other in memory, no sockets, no tokio. Measures what multiplexing
//! costs per byte, separate from I/O and encryption.
//!
//! ```sh
//! cargo bench -p shoal-benches --bench yamux_core
//! ```

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shoal_yamux::{Config, Connection, Mode, StreamId};

const CHUNK: usize = 64 * 1024;

struct Pair {
    client: Connection,
    server: Connection,
    streams: Vec<(StreamId, Option<StreamId>)>,
    wire: BytesMut,
    sink: Vec<u8>,
}

impl Pair {
    fn new(streams: usize) -> Pair {
        let now = Instant::now();
        let mut pair = Pair {
            client: Connection::new(Config::default(), Mode::Client, now),
            server: Connection::new(Config::default(), Mode::Server, now),
            streams: Vec::new(),
            wire: BytesMut::with_capacity(1 << 20),
            sink: vec![0u8; CHUNK],
        };
        for _ in 0..streams {
            let id = pair.client.open_stream().unwrap();
            pair.streams.push((id, None));
        }
        pair
    }

    /// Moves everything queued on each side to the other.
    fn pump(&mut self, now: Instant) {
        self.wire.clear();
        self.client.poll_transmit(&mut self.wire);
        if !self.wire.is_empty() {
            self.server.handle_input(&mut self.wire, now).unwrap();
        }
        while self.server.poll_event().is_some() {}
        while let Some(id) = self.server.accept_stream() {
            if let Some(slot) = self
                .streams
                .iter_mut()
                .find(|(c, s)| s.is_none() && *c == id)
            {
                slot.1 = Some(id);
            }
        }
        self.wire.clear();
        self.server.poll_transmit(&mut self.wire);
        if !self.wire.is_empty() {
            self.client.handle_input(&mut self.wire, now).unwrap();
        }
        while self.client.poll_event().is_some() {}
    }

    /// Sends `total` bytes spread over all streams, reading them on the
    /// server side as they arrive.
    fn transfer(&mut self, data: &[u8], total: usize) {
        let now = Instant::now();
        let mut sent = 0;
        let mut received = 0;
        let mut rounds = 0;
        while received < total {
            rounds += 1;
            assert!(rounds < 1_000_000, "transfer made no progress");
            for i in 0..self.streams.len() {
                let (cid, _) = self.streams[i];
                if sent < total {
                    let n = (total - sent).min(data.len());
                    sent += self.client.write(cid, &data[..n]).unwrap();
                }
            }
            self.pump(now);
            for i in 0..self.streams.len() {
                if let (_, Some(sid)) = self.streams[i] {
                    while let Ok(Some(n @ 1..)) = self.server.read(sid, &mut self.sink, now) {
                        received += n;
                    }
                }
            }
            self.pump(now);
        }
    }
}

fn bench(c: &mut Criterion) {
    let data = vec![0x5au8; CHUNK];
    let total = 8 << 20;
    let mut group = c.benchmark_group("yamux_core");
    group.throughput(Throughput::Bytes(total as u64));
    for streams in [1usize, 64] {
        group.bench_with_input(BenchmarkId::new("bulk_8MiB", streams), &streams, |b, &n| {
            let mut pair = Pair::new(n);
            b.iter(|| pair.transfer(&data, total));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
