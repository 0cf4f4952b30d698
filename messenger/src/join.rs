//! Joining the network and publishing this user's records: the parts of
//! the messenger's driver task that only talk to the DHT.

use std::time::Duration;

use shoal::{CoreHandle, DialOptions, ServiceControl};
use shoal_im::Store;
use shoal_kad::SignedRecord;
use shoal_transport::Multiaddr;

use crate::directory;
use crate::im_core::ImCore;
use crate::messenger::unix_ms;

/// How long one dial to a bootstrap node may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// This device's presence and prekey records at `seq`, announcing
/// `addrs`, valid for `ttl`.
pub(crate) fn records<S: Store>(
    core: &CoreHandle<ImCore<S>>,
    addrs: &[Multiaddr],
    seq: u64,
    ttl: Duration,
) -> Option<(SignedRecord, SignedRecord)> {
    let expires = (unix_ms() / 1000).saturating_add(ttl.as_secs());
    let records = core.with(|c, _| {
        let device = c.engine.device();
        directory::presence_record(device, addrs, seq, expires).and_then(|p| {
            directory::prekeys_record(device, &c.engine.prekey_bundle(), seq, expires)
                .map(|b| (p, b))
        })
    });
    records
        .map_err(|e| tracing::warn!(%e, "presence records not built"))
        .ok()
}

/// Dials each of `addrs` (which name their peer), then joins the DHT
/// through those that answered. `Err` is one readable line per address
/// that could not be reached (or the DHT's refusal).
pub(crate) async fn join_through(
    control: &ServiceControl,
    dht: &shoal_kad::Handle,
    addrs: Vec<Multiaddr>,
) -> Result<(), String> {
    let mut seeds = Vec::new();
    let mut problems = Vec::new();
    for addr in addrs {
        let Some(peer) = addr.peer_id() else {
            problems.push(format!("{addr}: the address needs /p2p/<peer id>"));
            continue;
        };
        let dial = control.dial(addr.clone(), DialOptions::default().expect(peer));
        match tokio::time::timeout(DIAL_TIMEOUT, dial).await {
            Ok(Ok(_)) => seeds.push((peer, vec![addr.without_peer_id()])),
            Ok(Err(e)) => problems.push(format!("bootstrap {addr} unreachable: {}", short(&e))),
            Err(_) => problems.push(format!("bootstrap {addr} unreachable: no answer")),
        }
    }
    if !seeds.is_empty() {
        match tokio::time::timeout(Duration::from_secs(60), dht.bootstrap(seeds)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => problems.push(format!("joining the network failed: {e}")),
            Err(_) => problems.push("joining the network timed out".to_owned()),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// A dial error as a short phrase: the innermost cause ("connection
/// refused", "no answer"), not the whole chain.
fn short(error: &shoal::DialError) -> String {
    let mut source: &dyn std::error::Error = error;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

pub(crate) async fn put_records(
    dht: &shoal_kad::Handle,
    records: Option<(SignedRecord, SignedRecord)>,
) {
    let Some((presence, prekeys)) = records else {
        return;
    };
    let (p, b) = tokio::join!(dht.put_record(presence), dht.put_record(prekeys));
    match (p, b) {
        (Ok((p, _)), Ok((b, _))) => tracing::debug!(p, b, "presence published"),
        (p, b) => tracing::warn!(?p, ?b, "presence not published"),
    }
}
