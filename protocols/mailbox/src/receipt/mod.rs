//! Receipts, and the quorum that makes an envelope "stored".
//!
//! A replica signs receipts only after the envelopes' commit is on its
//! disk, and it signs a whole committed batch at once: each envelope is a
//! leaf
//!
//! ```text
//! leaf = H("shoal/mailbox/receipt-leaf/1", mailbox id (32) | envelope hash (32) | expiry (u64, big-endian))
//! node = H("shoal/mailbox/receipt-node/1", left (32) | right (32))
//! ```
//!
//! (H is BLAKE2b-256 over `len(d) | d | input`), the leaves in batch order
//! are paired level by level (an unpaired last node moves up as it is),
//! and the replica's identity key signs the root under [`RECEIPT_PURPOSE`].
//! A receipt is that signature with the envelope's [`Proof`]: the sibling
//! hashes from its leaf to the root. One signature per batch instead of
//! one per envelope is what lets a replica sign for tens of thousands of
//! envelopes a second; a batch of one has an empty proof and its root is
//! the leaf.
//!
//! The sender checks each receipt against the peer it came from and counts
//! it toward the write quorum only under the rules of [`Quorum`].

mod quorum;

use blake2::{Blake2b, Digest, digest::consts::U32};
use shoal_identity::{Keypair, PeerId, Purpose, SIGNATURE_LEN, signed_input};

use crate::id::{EnvelopeHash, ID_LEN, MailboxId};

pub use self::quorum::{NetGroup, Quorum, ReceiptError};

/// Domain of the signature over a batch's root.
pub const RECEIPT_PURPOSE: Purpose = Purpose::new("shoal/mailbox/receipt/1");

/// Domain of a leaf hash.
pub const LEAF_PURPOSE: Purpose = Purpose::new("shoal/mailbox/receipt-leaf/1");

/// Domain of an inner node hash.
pub const NODE_PURPOSE: Purpose = Purpose::new("shoal/mailbox/receipt-node/1");

/// Longest proof accepted (a batch of up to 65,536 envelopes).
pub const MAX_PROOF_LEN: usize = 16;

fn hash(purpose: Purpose, input: &[u8]) -> [u8; 32] {
    Blake2b::<U32>::digest(signed_input(purpose, input)).into()
}

/// The leaf of one envelope's receipt.
pub fn leaf(mailbox: &MailboxId, envelope: &EnvelopeHash, expiry: u64) -> [u8; 32] {
    let mut input = [0u8; 2 * ID_LEN + 8];
    input[..ID_LEN].copy_from_slice(mailbox.as_bytes());
    input[ID_LEN..2 * ID_LEN].copy_from_slice(envelope.as_bytes());
    input[2 * ID_LEN..].copy_from_slice(&expiry.to_be_bytes());
    hash(LEAF_PURPOSE, &input)
}

fn node(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut input = [0u8; 64];
    input[..32].copy_from_slice(left);
    input[32..].copy_from_slice(right);
    hash(NODE_PURPOSE, &input)
}

/// The path from a leaf to its batch's root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proof {
    /// Sibling hashes, leaf level first.
    pub siblings: Vec<[u8; 32]>,
    /// Bit `i` set: sibling `i` is on the left.
    pub sides: u32,
}

impl Proof {
    /// The root this proof leads to from `leaf`, or `None` if it is longer
    /// than [`MAX_PROOF_LEN`].
    pub fn root(&self, leaf: [u8; 32]) -> Option<[u8; 32]> {
        if self.siblings.len() > MAX_PROOF_LEN {
            return None;
        }
        Some(
            self.siblings
                .iter()
                .enumerate()
                .fold(leaf, |h, (i, sibling)| {
                    if self.sides & (1 << i) != 0 {
                        node(sibling, &h)
                    } else {
                        node(&h, sibling)
                    }
                }),
        )
    }
}

/// The root of `leaves` and each leaf's proof, in order.
pub fn tree(leaves: &[[u8; 32]]) -> ([u8; 32], Vec<Proof>) {
    let mut proofs = vec![Proof::default(); leaves.len()];
    // Each entry of a level: its hash and the leaves below it.
    let mut level: Vec<([u8; 32], Vec<usize>)> = leaves
        .iter()
        .enumerate()
        .map(|(i, l)| (*l, vec![i]))
        .collect();
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        let mut nodes = level.into_iter();
        while let Some((left, mut below)) = nodes.next() {
            let Some((right, right_below)) = nodes.next() else {
                // Unpaired: up as it is.
                next.push((left, below));
                break;
            };
            for &i in &below {
                proofs[i].siblings.push(right);
            }
            for &i in &right_below {
                let p = &mut proofs[i];
                p.sides |= 1 << p.siblings.len();
                p.siblings.push(left);
            }
            below.extend(right_below);
            next.push((node(&left, &right), below));
        }
        level = next;
    }
    let root = level.first().map_or([0; 32], |(h, _)| *h);
    (root, proofs)
}

/// A replica's signed statement that it holds an envelope until `expiry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The replica (its peer id is its verification key).
    pub replica: PeerId,
    /// The mailbox.
    pub mailbox: MailboxId,
    /// The envelope.
    pub envelope: EnvelopeHash,
    /// Unix seconds until which the replica keeps it (unless acked).
    pub expiry: u64,
    /// From the envelope's leaf to the signed root.
    pub proof: Proof,
    /// The replica's signature over the root.
    pub signature: [u8; SIGNATURE_LEN],
}

impl Receipt {
    /// The receipts `replica` gives for a committed batch of (mailbox,
    /// envelope, expiry), in order: one signature for all.
    pub fn sign_batch(replica: &Keypair, batch: &[(MailboxId, EnvelopeHash, u64)]) -> Vec<Receipt> {
        let leaves: Vec<[u8; 32]> = batch.iter().map(|(m, e, x)| leaf(m, e, *x)).collect();
        let (root, proofs) = tree(&leaves);
        let signature = replica.sign(RECEIPT_PURPOSE, &root);
        batch
            .iter()
            .zip(proofs)
            .map(|((mailbox, envelope, expiry), proof)| Receipt {
                replica: replica.peer_id(),
                mailbox: *mailbox,
                envelope: *envelope,
                expiry: *expiry,
                proof,
                signature,
            })
            .collect()
    }

    /// The receipt `replica` gives for one envelope (a batch of one).
    pub fn sign(
        replica: &Keypair,
        mailbox: MailboxId,
        envelope: EnvelopeHash,
        expiry: u64,
    ) -> Receipt {
        let mut receipts = Receipt::sign_batch(replica, &[(mailbox, envelope, expiry)]);
        receipts.remove(0)
    }

    /// Whether the signature is the replica's over the root that the
    /// proof leads to from exactly these fields.
    pub fn verify(&self) -> bool {
        let Some(root) = self
            .proof
            .root(leaf(&self.mailbox, &self.envelope, self.expiry))
        else {
            return false;
        };
        self.replica
            .public_key()
            .is_ok_and(|key| key.verify(RECEIPT_PURPOSE, &root, &self.signature).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_receipt_of_a_batch_verifies_and_only_for_its_envelope() {
        let replica = Keypair::from_secret_bytes(&[1; 32]);
        for n in [1usize, 2, 3, 5, 8, 13, 64] {
            let batch: Vec<_> = (0..n)
                .map(|i| {
                    (
                        MailboxId::from_bytes([i as u8 % 3; 32]),
                        EnvelopeHash::of(&[i as u8]),
                        1000 + i as u64,
                    )
                })
                .collect();
            let receipts = Receipt::sign_batch(&replica, &batch);
            assert_eq!(receipts.len(), n);
            for r in &receipts {
                assert!(r.verify(), "batch of {n}");
                assert!(r.proof.siblings.len() <= 7);
                let mut other = r.clone();
                other.envelope = EnvelopeHash::of(b"another");
                assert!(!other.verify());
                let mut later = r.clone();
                later.expiry += 1;
                assert!(!later.verify());
                if n > 1 {
                    let mut flipped = r.clone();
                    flipped.proof.sides ^= 1;
                    assert!(!flipped.verify());
                }
            }
        }
    }
}
