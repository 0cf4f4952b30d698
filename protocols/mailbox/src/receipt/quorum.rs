//! The write quorum: which receipts count.
//!
//! A receipt counts toward W only if it verifies for the peer whose
//! session carried it, that peer was among the candidates of the sender's
//! lookup (the R closest mailbox nodes), its expiry is at least the one
//! asked for, and no counted receipt came from the same peer or the same
//! network ([`NetGroup`]: an IPv4 /24 or an IPv6 /48), so W receipts mean
//! W machines on W networks.

use std::net::IpAddr;

use shoal_identity::{PeerId, SIGNATURE_LEN};
use shoal_transport::{Multiaddr, Protocol};

use super::{Proof, Receipt};
use crate::id::{EnvelopeHash, MailboxId};

/// The network a replica answered from: replicas of one quorum must be in
/// distinct groups.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NetGroup {
    /// The first three bytes of an IPv4 address (loopback included: a test
    /// on 127.x.y.1 addresses exercises the rule rather than skipping it).
    V4([u8; 3]),
    /// The first six bytes of an IPv6 address.
    V6([u8; 6]),
    /// An address without an IP (in-memory transports): the address itself.
    Other(String),
}

impl NetGroup {
    /// The group of the first IP in `addr` (an IPv4-mapped IPv6 address
    /// counts as IPv4).
    pub fn of(addr: &Multiaddr) -> NetGroup {
        let ip = addr.iter().find_map(|p| match p {
            Protocol::Ip4(ip) => Some(IpAddr::V4(*ip)),
            Protocol::Ip6(ip) => Some(IpAddr::V6(*ip)),
            _ => None,
        });
        match ip {
            Some(IpAddr::V4(v4)) => {
                let o = v4.octets();
                NetGroup::V4([o[0], o[1], o[2]])
            }
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => {
                    let o = v4.octets();
                    NetGroup::V4([o[0], o[1], o[2]])
                }
                None => {
                    let o = v6.octets();
                    NetGroup::V6([o[0], o[1], o[2], o[3], o[4], o[5]])
                }
            },
            None => NetGroup::Other(addr.without_peer_id().to_string()),
        }
    }
}

/// Why a receipt was not counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The signature does not verify over the envelope's fields.
    #[error("receipt signature does not verify")]
    BadSignature,
    /// The replica was not among the candidates of the sender's lookup.
    #[error("replica was not among the closest nodes found")]
    NotCandidate,
    /// A receipt from this peer was already counted.
    #[error("replica already counted")]
    SamePeer,
    /// A receipt from a replica of this network was already counted.
    #[error("a replica of the same network was already counted")]
    SameNetwork,
    /// The replica promised to keep the envelope for less than asked.
    #[error("receipt expiry {got} is before the {wanted} asked for")]
    ShortExpiry {
        /// The receipt's expiry.
        got: u64,
        /// The least expiry the sender accepts.
        wanted: u64,
    },
}

/// One envelope's write quorum: which candidates signed, and whether W
/// distinct ones did. Sans-IO; the caller sends the store requests.
#[derive(Debug, Clone)]
pub struct Quorum {
    mailbox: MailboxId,
    envelope: EnvelopeHash,
    min_expiry: u64,
    candidates: Vec<PeerId>,
    needed: usize,
    counted: Vec<(Receipt, NetGroup)>,
}

impl Quorum {
    /// A quorum of `needed` receipts for `envelope` in `mailbox` from among
    /// `candidates`, each promising to keep it at least until `min_expiry`.
    pub fn new(
        mailbox: MailboxId,
        envelope: EnvelopeHash,
        min_expiry: u64,
        candidates: Vec<PeerId>,
        needed: usize,
    ) -> Quorum {
        Quorum {
            mailbox,
            envelope,
            min_expiry,
            candidates,
            needed,
            counted: Vec::new(),
        }
    }

    /// Counts the receipt (`signature`, `proof`, for `expiry`) that
    /// `replica` sent over a connection to `addr`, or says why not.
    pub fn add(
        &mut self,
        replica: PeerId,
        addr: &Multiaddr,
        signature: [u8; SIGNATURE_LEN],
        proof: Proof,
        expiry: u64,
    ) -> Result<&Receipt, ReceiptError> {
        let receipt = Receipt {
            replica,
            mailbox: self.mailbox,
            envelope: self.envelope,
            expiry,
            proof,
            signature,
        };
        if !receipt.verify() {
            return Err(ReceiptError::BadSignature);
        }
        if !self.candidates.contains(&replica) {
            return Err(ReceiptError::NotCandidate);
        }
        if expiry < self.min_expiry {
            return Err(ReceiptError::ShortExpiry {
                got: expiry,
                wanted: self.min_expiry,
            });
        }
        if self.counted.iter().any(|(r, _)| r.replica == replica) {
            return Err(ReceiptError::SamePeer);
        }
        let group = NetGroup::of(addr);
        if self.counted.iter().any(|(_, g)| *g == group) {
            return Err(ReceiptError::SameNetwork);
        }
        self.counted.push((receipt, group));
        Ok(&self.counted[self.counted.len() - 1].0)
    }

    /// Whether `needed` receipts are counted.
    pub fn is_met(&self) -> bool {
        self.counted.len() >= self.needed
    }

    /// The receipts counted, in arrival order.
    pub fn receipts(&self) -> impl Iterator<Item = &Receipt> {
        self.counted.iter().map(|(r, _)| r)
    }

    /// Receipts still needed.
    pub fn missing(&self) -> usize {
        self.needed.saturating_sub(self.counted.len())
    }

    /// The candidates, as given.
    pub fn candidates(&self) -> &[PeerId] {
        &self.candidates
    }
}

#[cfg(test)]
mod tests {
    use shoal_identity::Keypair;

    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn groups() {
        assert_eq!(
            NetGroup::of(&addr("/ip4/127.0.1.1/tcp/1")),
            NetGroup::V4([127, 0, 1])
        );
        assert_ne!(
            NetGroup::of(&addr("/ip4/127.0.1.1/tcp/1")),
            NetGroup::of(&addr("/ip4/127.0.2.1/tcp/1"))
        );
        assert_eq!(
            NetGroup::of(&addr("/ip6/::ffff:10.1.2.3/tcp/1")),
            NetGroup::V4([10, 1, 2])
        );
        assert_eq!(
            NetGroup::of(&addr("/ip6/2001:db8:7:1::1/tcp/1")),
            NetGroup::of(&addr("/ip6/2001:db8:7:2::9/tcp/4"))
        );
    }

    #[test]
    fn quorum_counts_distinct_verified_candidates() {
        let replicas: Vec<Keypair> = (1..=4u8)
            .map(|i| Keypair::from_secret_bytes(&[i; 32]))
            .collect();
        let mailbox = MailboxId::from_bytes([7; 32]);
        let envelope = EnvelopeHash::of(b"envelope");
        let candidates = replicas[..3].iter().map(Keypair::peer_id).collect();
        let mut q = Quorum::new(mailbox, envelope, 100, candidates, 2);
        let sig = |k: &Keypair, expiry| Receipt::sign(k, mailbox, envelope, expiry).signature;
        let none = Proof::default;
        let a = addr("/ip4/10.0.1.1/tcp/1");
        let b = addr("/ip4/10.0.1.2/tcp/1");
        let c = addr("/ip4/10.0.2.1/tcp/1");

        // Someone else's signature, or over another expiry, is not a receipt.
        let forged = sig(&replicas[1], 100);
        assert_eq!(
            q.add(replicas[0].peer_id(), &a, forged, none(), 100)
                .unwrap_err(),
            ReceiptError::BadSignature
        );
        assert_eq!(
            q.add(
                replicas[0].peer_id(),
                &a,
                sig(&replicas[0], 100),
                none(),
                101
            )
            .unwrap_err(),
            ReceiptError::BadSignature
        );
        assert_eq!(
            q.add(
                replicas[3].peer_id(),
                &c,
                sig(&replicas[3], 100),
                none(),
                100
            )
            .unwrap_err(),
            ReceiptError::NotCandidate
        );
        assert!(matches!(
            q.add(replicas[0].peer_id(), &a, sig(&replicas[0], 99), none(), 99),
            Err(ReceiptError::ShortExpiry { .. })
        ));
        q.add(
            replicas[0].peer_id(),
            &a,
            sig(&replicas[0], 100),
            none(),
            100,
        )
        .unwrap();
        assert_eq!(
            q.add(
                replicas[0].peer_id(),
                &c,
                sig(&replicas[0], 100),
                none(),
                100
            )
            .unwrap_err(),
            ReceiptError::SamePeer
        );
        assert_eq!(
            q.add(
                replicas[1].peer_id(),
                &b,
                sig(&replicas[1], 100),
                none(),
                100
            )
            .unwrap_err(),
            ReceiptError::SameNetwork
        );
        assert!(!q.is_met());
        q.add(
            replicas[2].peer_id(),
            &c,
            sig(&replicas[2], 200),
            none(),
            200,
        )
        .unwrap();
        assert!(q.is_met());
        assert_eq!(q.receipts().count(), 2);
        assert!(q.receipts().all(Receipt::verify));
    }
}
