//! Thirty nodes bootstrapped from one seed learn every record and hold
//! their target connections; killing ten leaves the rest connected with
//! their stores updated.
#![allow(clippy::unwrap_used)]

mod common;

use std::{collections::HashSet, time::Duration};

use common::{Node, eventually, fast_config, node};
use shoal::{Direction, PeerId};
use shoal_transport::MemoryNetwork;

const NODES: usize = 30;
const KILLED: usize = 10;

/// Every node in `nodes` knows a record of every other, and holds `target`
/// outbound sessions (or is connected to everyone).
fn converged(nodes: &[Node], target: usize) -> Result<(), String> {
    let ids: HashSet<PeerId> = nodes.iter().map(Node::id).collect();
    for (i, n) in nodes.iter().enumerate() {
        let known: HashSet<PeerId> = n.known().into_iter().collect();
        let missing = ids
            .iter()
            .filter(|p| **p != n.id() && !known.contains(p))
            .count();
        if missing > 0 {
            return Err(format!("node {i} misses {missing} records"));
        }
        // Outbound sessions reach the target, unless every other node is
        // already connected (the seed: everyone dialled it).
        let connected: HashSet<PeerId> = n.control.sessions().iter().map(|s| s.peer).collect();
        let all_connected = connected.len() == ids.len() - 1;
        if n.outbound() < target && !all_connected {
            return Err(format!("node {i} has {} outbound sessions", n.outbound()));
        }
        if connected.len() < target {
            return Err(format!(
                "node {i} is connected to {} peers",
                connected.len()
            ));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_nodes_learn_everyone_and_survive_losing_ten() {
    let network = MemoryNetwork::new();
    let seed = node(&network, fast_config(vec![])).await;
    let bootstrap = vec![seed.full_addr()];
    let mut nodes = vec![seed];
    for _ in 1..NODES {
        nodes.push(node(&network, fast_config(bootstrap.clone())).await);
    }
    let target = fast_config(vec![]).target_connections;

    eventually("30 nodes to converge", Duration::from_secs(60), || {
        converged(&nodes, target)
    })
    .await;
    // Every stored record is the peer's own, with the address it listens on.
    for n in &nodes {
        for info in n.handle.peers() {
            let record = info.record.unwrap();
            let owner = nodes.iter().find(|m| m.id() == info.peer).unwrap();
            assert_eq!(record.addrs(), std::slice::from_ref(&owner.addr));
        }
    }

    // Kill ten (not the seed): shut their services down.
    let killed: Vec<Node> = nodes.drain(NODES - KILLED..).collect();
    let dead: HashSet<PeerId> = killed.iter().map(Node::id).collect();
    for k in &killed {
        k.control.shutdown().await;
    }

    // The survivors reconnect among themselves and every trace of the dead
    // leaves their stores (failed dials, or no news for the TTL).
    eventually("survivors to recover", Duration::from_secs(60), || {
        converged(&nodes, target)?;
        for (i, n) in nodes.iter().enumerate() {
            if let Some(p) = n.handle.peers().iter().find(|p| dead.contains(&p.peer)) {
                return Err(format!("node {i} still has dead peer {} ({p:?})", p.peer));
            }
            for s in n.control.sessions() {
                if dead.contains(&s.peer) {
                    return Err(format!("node {i} still has a session with {}", s.peer));
                }
            }
            // Every peer it dialled has a verified address; and it dialled
            // the target unless everyone is connected to it already (the
            // seed, or an early node everyone else dialled).
            let verified: HashSet<PeerId> = n
                .handle
                .peers()
                .iter()
                .filter(|p| p.addrs.iter().any(|a| a.verified))
                .map(|p| p.peer)
                .collect();
            let sessions = n.control.sessions();
            if let Some(s) = sessions
                .iter()
                .find(|s| s.direction == Direction::Outbound && !verified.contains(&s.peer))
            {
                return Err(format!("node {i} dialled {} but has it unverified", s.peer));
            }
            let all_connected = sessions.len() == nodes.len() - 1;
            if verified.len() < target && !all_connected {
                return Err(format!(
                    "node {i} has only {} verified peers ({} sessions)",
                    verified.len(),
                    sessions.len()
                ));
            }
        }
        Ok(())
    })
    .await;
    for n in &nodes {
        assert_eq!(n.handle.len(), NODES - KILLED - 1);
    }
    for n in &nodes {
        n.control.shutdown().await;
    }
}
