//! The peers a node or chat met, kept in `<data dir>/peers` so that a restarted
//! node can find its network again without a `--connect` address.
//!
//! The file has one line per peer, most recently seen first:
//!
//! ```text
//! # peer id, last seen (unix seconds), addresses
//! 5QcF5LeVgwmHQvXA4FAijFxAx9iuuStAW8QyMn4Aw2be 1718000000 /ip4/127.0.0.1/tcp/4001
//! ```
//!
//! It is replaced atomically (written beside, then renamed), holds at most
//! [`MAX_PEERS`] peers of at most [`MAX_ADDRS`] addresses each, and a peer
//! not seen for [`FORGET_AFTER`] is dropped when the file is loaded or
//! saved. Lines that do not parse are skipped.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_identity::PeerId;
use shoal_transport::Multiaddr;

/// Peers remembered; beyond it the least recently seen are forgotten.
pub(crate) const MAX_PEERS: usize = 256;
/// Addresses remembered per peer; a peer claiming more cannot make us
/// dial more.
pub(crate) const MAX_ADDRS: usize = 8;
/// A peer not seen for this long is forgotten.
pub(crate) const FORGET_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);
/// Largest file read: 256 peers of 8 addresses fit many times over, and a
/// damaged or hostile file cannot make the node read gigabytes.
const MAX_FILE_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    last_seen: u64,
    /// Most useful first: the address we reached it at, then its claims.
    addrs: Vec<Multiaddr>,
}

/// The remembered peers of one data directory.
#[derive(Debug)]
pub(crate) struct PeerBook {
    path: PathBuf,
    local: PeerId,
    peers: HashMap<PeerId, Entry>,
    changed: bool,
}

impl PeerBook {
    /// Reads `path` (a missing file is an empty book); returns the book and
    /// the number of lines skipped as malformed.
    pub(crate) fn load(
        path: &Path,
        local: PeerId,
        now_unix: u64,
    ) -> Result<(PeerBook, usize), String> {
        let mut text = String::new();
        match std::fs::File::open(path) {
            Ok(file) => {
                file.take(MAX_FILE_BYTES)
                    .read_to_string(&mut text)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        let mut book = PeerBook {
            path: path.to_owned(),
            local,
            peers: HashMap::new(),
            changed: false,
        };
        let skipped = book.parse(&text, now_unix);
        Ok((book, skipped))
    }

    fn parse(&mut self, text: &str, now_unix: u64) -> usize {
        let mut skipped = 0;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_ascii_whitespace();
            let peer = words.next().and_then(|w| w.parse::<PeerId>().ok());
            let seen = words.next().and_then(|w| w.parse::<u64>().ok());
            let addrs: Option<Vec<Multiaddr>> = words.map(|w| w.parse().ok()).collect();
            match (peer, seen, addrs) {
                (Some(peer), Some(seen), Some(addrs)) if !addrs.is_empty() => {
                    self.merge(peer, &addrs, seen.min(now_unix));
                }
                _ => skipped += 1,
            }
        }
        self.trim(now_unix);
        self.changed = false;
        skipped
    }

    /// Notes that `peer` was seen at `now_unix`, reachable at `addrs`
    /// (given first, they go before the addresses known already).
    pub(crate) fn seen(&mut self, peer: PeerId, addrs: &[Multiaddr], now_unix: u64) {
        self.merge(peer, addrs, now_unix);
        if self.peers.len() > MAX_PEERS {
            self.trim(now_unix);
        }
    }

    fn merge(&mut self, peer: PeerId, addrs: &[Multiaddr], seen: u64) {
        if peer == self.local {
            return;
        }
        let entry = self.peers.entry(peer).or_insert(Entry {
            last_seen: 0,
            addrs: Vec::new(),
        });
        let mut merged: Vec<Multiaddr> = Vec::new();
        for addr in addrs
            .iter()
            .map(Multiaddr::without_peer_id)
            .filter(dialable)
        {
            if !merged.contains(&addr) {
                merged.push(addr);
            }
        }
        for addr in &entry.addrs {
            if !merged.contains(addr) {
                merged.push(addr.clone());
            }
        }
        merged.truncate(MAX_ADDRS);
        let last_seen = entry.last_seen.max(seen);
        self.changed |= last_seen != entry.last_seen || entry.addrs != merged;
        entry.last_seen = last_seen;
        entry.addrs = merged;
    }

    /// Drops peers without an address or not seen for [`FORGET_AFTER`],
    /// then all but the [`MAX_PEERS`] most recently seen.
    fn trim(&mut self, now_unix: u64) {
        let oldest = now_unix.saturating_sub(FORGET_AFTER.as_secs());
        let before = self.peers.len();
        self.peers
            .retain(|_, e| e.last_seen >= oldest && !e.addrs.is_empty());
        if self.peers.len() > MAX_PEERS {
            let mut seen: Vec<u64> = self.peers.values().map(|e| e.last_seen).collect();
            seen.sort_unstable_by(|a, b| b.cmp(a));
            let cut = seen[MAX_PEERS - 1];
            // Ties at the cut: keep the first ones met in the map's order.
            let mut at_cut = seen[..MAX_PEERS].iter().filter(|&&s| s == cut).count();
            self.peers.retain(|_, e| {
                if e.last_seen > cut {
                    true
                } else if e.last_seen == cut && at_cut > 0 {
                    at_cut -= 1;
                    true
                } else {
                    false
                }
            });
        }
        self.changed |= self.peers.len() != before;
    }

    /// The peers, most recently seen first, with their addresses.
    pub(crate) fn peers(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.sorted()
            .into_iter()
            .map(|(peer, e)| (peer, e.addrs.clone()))
            .collect()
    }

    fn sorted(&self) -> Vec<(PeerId, &Entry)> {
        let mut all: Vec<(PeerId, &Entry)> = self.peers.iter().map(|(p, e)| (*p, e)).collect();
        all.sort_by(|a, b| b.1.last_seen.cmp(&a.1.last_seen).then(a.0.cmp(&b.0)));
        all
    }

    /// Where the book is kept.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the file if anything changed since it was read or written
    /// (or always, with `force`); returns the number of peers written.
    pub(crate) fn save(&mut self, now_unix: u64, force: bool) -> Result<Option<usize>, String> {
        self.trim(now_unix);
        if !self.changed && !force {
            return Ok(None);
        }
        let mut text = String::from("# peer id, last seen (unix seconds), addresses\n");
        let sorted = self.sorted();
        for (peer, entry) in &sorted {
            let addrs: Vec<String> = entry.addrs.iter().map(|a| a.to_string()).collect();
            text.push_str(&format!("{peer} {} {}\n", entry.last_seen, addrs.join(" ")));
        }
        let n = sorted.len();
        write_atomically(&self.path, text.as_bytes())
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.changed = false;
        Ok(Some(n))
    }
}

/// An address worth remembering: TCP on a real host and port.
fn dialable(addr: &Multiaddr) -> bool {
    match addr.to_socket_addr() {
        Some(socket) => socket.port() != 0 && !socket.ip().is_unspecified(),
        None => false,
    }
}

/// Writes `bytes` to `<path>.tmp` (owner-only), flushes it to disk, and
/// renames it over `path`: a crash leaves the old file or the new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        shoal_identity::Keypair::try_generate().unwrap().peer_id()
    }

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("shoal-node-peers-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn saved_peers_load_again_newest_first() {
        let dir = temp_dir("roundtrip");
        let path = dir.join("peers");
        let _ = std::fs::remove_file(&path);
        let (local, a, b) = (peer(), peer(), peer());
        let (mut book, skipped) = PeerBook::load(&path, local, 1000).unwrap();
        assert_eq!(skipped, 0);
        book.seen(a, &[addr(1), "/ip4/0.0.0.0/tcp/5".parse().unwrap()], 900);
        book.seen(b, &[addr(2).with_peer_id(b)], 950);
        book.seen(a, &[addr(3)], 960);
        book.seen(local, &[addr(4)], 960);
        assert_eq!(book.save(1000, false).unwrap(), Some(2));
        assert_eq!(book.save(1000, false).unwrap(), None, "nothing changed");
        let (again, skipped) = PeerBook::load(&path, local, 1000).unwrap();
        assert_eq!(skipped, 0);
        assert_eq!(
            again.peers(),
            vec![(a, vec![addr(3), addr(1)]), (b, vec![addr(2)])]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn old_bad_and_surplus_peers_are_dropped() {
        let local = peer();
        let now = 10 * FORGET_AFTER.as_secs();
        let mut book = PeerBook {
            path: PathBuf::new(),
            local,
            peers: HashMap::new(),
            changed: false,
        };
        let old = peer();
        let text = format!(
            "# comment\n{old} {} /ip4/127.0.0.1/tcp/1\nnot-a-peer 5 /ip4/127.0.0.1/tcp/1\n{} x /ip4/127.0.0.1/tcp/1\n",
            now - FORGET_AFTER.as_secs() - 1,
            peer()
        );
        assert_eq!(book.parse(&text, now), 2);
        assert!(book.peers().is_empty(), "the old one is forgotten");
        let many: Vec<PeerId> = (0..MAX_PEERS + 10).map(|_| peer()).collect();
        for (i, p) in many.iter().enumerate() {
            book.seen(*p, &[addr(1000)], now - 1000 + i as u64);
        }
        let kept = book.peers();
        assert_eq!(kept.len(), MAX_PEERS);
        assert_eq!(kept[0].0, many[MAX_PEERS + 9], "newest first");
        assert!(
            !kept.iter().any(|(p, _)| many[..10].contains(p)),
            "oldest dropped"
        );
    }
}
