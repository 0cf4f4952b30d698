//! Three `node` processes on loopback keep exactly one TCP connection per
//! pair of nodes, counted from the kernel's socket tables (`/proc/net/tcp*`)
//! once every node has identified the two others and joined the DHT:
//! - in a chain (b connects to a, c to b; c and a find each other through
//!   discovery and the DHT);
//! - when all three start at once, each dialling the two others (the dials
//!   cross) and one of them twice (the dials repeat).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Process, TempDir};

/// Upper bound for the whole test.
const LIMIT: Duration = Duration::from_secs(30);
/// The counts must stay the same this long to be taken as settled.
const SETTLE: Duration = Duration::from_secs(2);

fn node(name: &str, args: &[&str]) -> Process {
    let mut all = vec!["--duration", "40", "--ping-interval", "1"];
    all.extend_from_slice(args);
    Process::start(name, env!("CARGO_BIN_EXE_node"), all)
}

/// The TCP port of `/ip4/127.0.0.1/tcp/<port>/p2p/<id>`.
fn port_of(addr: &str) -> u16 {
    addr.split('/').nth(4).unwrap().parse().unwrap()
}

/// An ESTABLISHED socket of the kernel's tables.
#[derive(Debug)]
struct Socket {
    local_port: u16,
    remote_port: u16,
    inode: u64,
}

/// The `ip:port` column's port (hexadecimal).
fn hex_port(column: &str) -> Option<u16> {
    u16::from_str_radix(column.rsplit(':').next()?, 16).ok()
}

/// Every ESTABLISHED (state 01) TCP socket, IPv4 and IPv6.
fn established() -> Vec<Socket> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "01" {
                continue;
            }
            if let (Some(local_port), Some(remote_port), Ok(inode)) =
                (hex_port(f[1]), hex_port(f[2]), f[9].parse())
            {
                out.push(Socket {
                    local_port,
                    remote_port,
                    inode,
                });
            }
        }
    }
    out
}

/// The socket inodes a process holds.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let text = target.to_str()?;
            text.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// TCP connections between the nodes `(listen port, pid)`, per unordered
/// pair of node indexes: each inbound socket on a node's listen port whose
/// other end is held by another node is one connection.
fn connections(nodes: &[(u16, u32)]) -> BTreeMap<(usize, usize), usize> {
    let sockets = established();
    let owned: Vec<HashSet<u64>> = nodes.iter().map(|&(_, pid)| socket_inodes(pid)).collect();
    let owner = |inode: u64| owned.iter().position(|s| s.contains(&inode));
    let mut pairs = BTreeMap::new();
    for inbound in &sockets {
        let Some(x) = nodes
            .iter()
            .position(|&(port, _)| port == inbound.local_port)
        else {
            continue;
        };
        if owner(inbound.inode) != Some(x) {
            continue;
        }
        // The dialling end: its local port is the inbound side's remote one.
        let dialler = sockets
            .iter()
            .find(|s| s.local_port == inbound.remote_port && s.remote_port == inbound.local_port)
            .and_then(|s| owner(s.inode));
        if let Some(y) = dialler.filter(|&y| y != x) {
            *pairs.entry((x.min(y), x.max(y))).or_insert(0) += 1;
        }
    }
    pairs
}

/// Waits until every node has identified the others and joined the DHT,
/// then until the connection counts hold still, and checks one per pair.
fn assert_one_connection_per_pair(
    nodes: &mut [Process; 3],
    addrs: &[String; 3],
    deadline: Instant,
) {
    let ids: Vec<&str> = addrs
        .iter()
        .map(|a| a.rsplit('/').next().unwrap())
        .collect();
    for (i, n) in nodes.iter_mut().enumerate() {
        for (j, id) in ids.iter().enumerate() {
            if i != j {
                n.wait_line(&format!("identified: {id}"), deadline);
            }
        }
        n.wait_line("dht: joined", deadline);
    }
    let sockets: Vec<(u16, u32)> = addrs
        .iter()
        .zip(nodes.iter())
        .map(|(addr, p)| (port_of(addr), p.child.id()))
        .collect();
    // Crossed or repeated dials may still be closing: wait until the
    // counts hold still.
    let mut last = connections(&sockets);
    let mut since = Instant::now();
    while since.elapsed() < SETTLE && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        let now = connections(&sockets);
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
    let want: BTreeMap<(usize, usize), usize> = [((0, 1), 1), ((0, 2), 1), ((1, 2), 1)].into();
    let [a, b, c] = nodes;
    assert_eq!(
        last,
        want,
        "connections per pair of nodes (0=a, 1=b, 2=c); a saw {:#?}\nb saw {:#?}\nc saw {:#?}",
        a.drain().to_vec(),
        b.drain().to_vec(),
        c.drain().to_vec()
    );
}

#[test]
fn three_nodes_in_a_chain_keep_one_connection_per_pair() {
    let deadline = Instant::now() + LIMIT;
    let mut a = node("a", &[]);
    let a_addr = a.value("listening on:", deadline);
    let mut b = node("b", &["--connect", &a_addr]);
    let b_addr = b.value("listening on:", deadline);
    let mut c = node("c", &["--connect", &b_addr]);
    let c_addr = c.value("listening on:", deadline);
    assert_one_connection_per_pair(&mut [a, b, c], &[a_addr, b_addr, c_addr], deadline);
}

#[test]
fn crossed_and_repeated_dials_leave_one_connection_per_pair() {
    let deadline = Instant::now() + LIMIT;
    let dir = TempDir::new("node-mesh");
    // Keys and ports chosen before any node starts, so that each can be
    // told the two others' addresses.
    let listeners: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    drop(listeners);
    let mut keys: Vec<PathBuf> = Vec::new();
    let mut addrs: Vec<String> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let seed = [i as u8 + 1; 32];
        let key = dir.join(format!("{i}.key"));
        let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&key, hex).unwrap();
        let id = shoal_identity::Keypair::from_secret_bytes(&seed).peer_id();
        keys.push(key);
        addrs.push(format!("/ip4/127.0.0.1/tcp/{port}/p2p/{id}"));
    }
    let names = ["a", "b", "c"];
    let nodes: Vec<Process> = (0..3)
        .map(|i| {
            let (j, k) = ((i + 1) % 3, (i + 2) % 3);
            let listen = format!("/ip4/127.0.0.1/tcp/{}", ports[i]);
            node(
                names[i],
                &[
                    "--key-file",
                    keys[i].to_str().unwrap(),
                    "--listen",
                    &listen,
                    "--connect",
                    &addrs[j],
                    "--connect",
                    &addrs[j],
                    "--connect",
                    &addrs[k],
                ],
            )
        })
        .collect();
    let mut nodes: [Process; 3] = nodes.try_into().ok().unwrap();
    for (n, addr) in nodes.iter_mut().zip(&addrs) {
        assert_eq!(&n.value("listening on:", deadline), addr);
    }
    let addrs: [String; 3] = addrs.try_into().unwrap();
    assert_one_connection_per_pair(&mut nodes, &addrs, deadline);
}
