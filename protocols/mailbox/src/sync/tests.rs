use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::id::EnvelopeHash;

fn item(rng: &mut ChaCha8Rng) -> SyncItem {
    SyncItem {
        key: SyncKey {
            expiry: 1_700_000_000 + rng.random_range(0..14 * 86_400),
            hash: EnvelopeHash::of(&rng.random::<[u8; 16]>()),
        },
        state: State::Held,
    }
}

/// What a reconciliation cost.
#[derive(Debug, Default)]
struct Cost {
    messages: usize,
    /// Ranges and asked-for hashes (not the items themselves).
    bytes: usize,
    /// Items sent, both ways.
    items: usize,
}

impl Cost {
    fn round_trips(&self) -> usize {
        self.messages.div_ceil(2)
    }
}

/// Runs a reconciliation between `a` (which starts) and `b`, applying what
/// each sends to the other; returns both sets afterwards, and the cost.
fn reconcile(a: &[SyncItem], b: &[SyncItem]) -> (Vec<SyncItem>, Vec<SyncItem>, Cost) {
    let mut sides = [a.to_vec(), b.to_vec()];
    let sets = [ItemSet::new(a.to_vec()), ItemSet::new(b.to_vec())];
    let mut cost = Cost::default();
    let mut ranges = sets[0].initiate();
    let mut asked: Vec<EnvelopeHash> = Vec::new();
    let mut turn = 1;
    for _ in 0..64 {
        let encoded = encode_ranges(&ranges);
        cost.messages += 1;
        cost.bytes += encoded.len() + 32 * asked.len();
        let decoded = match decode_ranges(&encoded) {
            Ok(d) => d,
            Err(e) => {
                for r in &ranges {
                    println!("{:?} {}", r.upper, matches!(r.mode, Mode::Skip));
                }
                panic!("{e}");
            }
        };
        // Ranges all skipped travel as nothing.
        let decoded = if decoded.is_empty() {
            ranges.clone()
        } else {
            decoded
        };
        let me = turn;
        let other = 1 - turn;
        // Items the other asked for in its message.
        let mut sent: Vec<SyncItem> = asked
            .iter()
            .filter_map(|h| sides[me].iter().find(|i| i.key.hash == *h).copied())
            .collect();
        let step = sets[me].respond(&decoded);
        sent.extend(step.send.iter().copied());
        cost.items += sent.len();
        for item in sent {
            merge(&mut sides[other], item);
        }
        if step.done() && step.need.is_empty() && encoded.is_empty() {
            break;
        }
        if step.done() && step.need.is_empty() {
            // Its last message: nothing asked, nothing to compare.
            cost.messages += 1;
            break;
        }
        ranges = step.ranges;
        asked = step.need;
        turn = other;
    }
    let [a, b] = sides;
    (a, b, cost)
}

fn merge(side: &mut Vec<SyncItem>, item: SyncItem) {
    match side.iter_mut().find(|i| i.key.hash == item.key.hash) {
        Some(mine) if item.state == State::Tombstone => mine.state = State::Tombstone,
        Some(_) => {}
        None => side.push(item),
    }
}

fn canonical(side: &[SyncItem]) -> HashMap<EnvelopeHash, State> {
    side.iter().map(|i| (i.key.hash, i.state)).collect()
}

#[test]
fn ten_thousand_items_with_ten_differences_in_three_round_trips_and_ten_kilobytes() {
    let mut rng = ChaCha8Rng::seed_from_u64(15);
    for trial in 0..5 {
        let shared: Vec<SyncItem> = (0..9_995).map(|_| item(&mut rng)).collect();
        let mut a = shared.clone();
        let mut b = shared;
        // 5 only a has, 5 only b has: 10 differences.
        a.extend((0..5).map(|_| item(&mut rng)));
        b.extend((0..5).map(|_| item(&mut rng)));
        let (a2, b2, cost) = reconcile(&a, &b);
        println!("trial {trial}: {cost:?}");
        assert_eq!(canonical(&a2), canonical(&b2));
        assert_eq!(canonical(&a2).len(), 10_005);
        assert!(cost.round_trips() <= 3, "{cost:?}");
        assert!(cost.bytes <= 10_000, "{cost:?}");
        assert_eq!(cost.items, 10);
    }
}

#[test]
fn equal_sets_cost_one_round_trip() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let a: Vec<SyncItem> = (0..1000).map(|_| item(&mut rng)).collect();
    let (_, _, cost) = reconcile(&a, &a);
    assert_eq!(cost.messages, 2, "{cost:?}");
    assert_eq!(cost.items, 0);
}

#[test]
fn a_newcomer_with_nothing_gets_everything_and_a_tombstone_wins() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut a: Vec<SyncItem> = (0..300).map(|_| item(&mut rng)).collect();
    let (_, b, _) = reconcile(&[], &a);
    assert_eq!(canonical(&b), canonical(&a));
    // b acked 10 of them; a, away during the ack, still holds them.
    let mut b2 = a.clone();
    for i in b2.iter_mut().take(10) {
        i.state = State::Tombstone;
    }
    let (a3, b3, cost) = reconcile(&a, &b2);
    assert_eq!(canonical(&a3), canonical(&b3));
    assert_eq!(
        canonical(&a3)
            .values()
            .filter(|s| **s == State::Tombstone)
            .count(),
        10
    );
    assert!(cost.items >= 10);
    // The held copy never comes back over the tombstone.
    a.truncate(10);
    let (_, b4, _) = reconcile(&a, &b3);
    assert_eq!(canonical(&b4), canonical(&b3));
}

#[test]
fn random_sets_converge() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for _ in 0..50 {
        let n = rng.random_range(0..3000);
        let shared: Vec<SyncItem> = (0..n).map(|_| item(&mut rng)).collect();
        let mut a = shared.clone();
        let mut b = shared;
        for _ in 0..rng.random_range(0..40) {
            let i = item(&mut rng);
            if rng.random_bool(0.5) {
                a.push(i)
            } else {
                b.push(i)
            }
        }
        // Some of one side's are the other's tombstones.
        for i in 0..a.len().min(b.len()).min(rng.random_range(0..5)) {
            if a[i] == b[i] {
                b[i].state = State::Tombstone;
            }
        }
        let (a2, b2, _) = reconcile(&a, &b);
        assert_eq!(canonical(&a2), canonical(&b2));
    }
}

#[test]
fn hostile_encodings_are_refused() {
    // Truncated, unknown mode, a list longer than its bytes, bounds out of
    // order, no final infinity.
    for bad in [
        &[1u8][..],
        &[0, 9],
        &[0, 2, 0xff, 0xff, 0x03],
        &[5, 0, 0, 2, 0, 0, 0],
        &[5, 0, 0],
        &[1, 33],
    ] {
        assert!(decode_ranges(bad).is_err(), "{bad:?}");
    }
    assert_eq!(decode_ranges(&[]).unwrap(), Vec::new());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The vectors of docs/PROTOCOL.md 12.9.
#[test]
fn protocol_vectors() {
    let expiry = 1_800_086_400;
    let sealed = SyncItem {
        key: SyncKey {
            expiry,
            hash: EnvelopeHash::of(b"sealed"),
        },
        state: State::Held,
    };
    let other = SyncItem {
        key: SyncKey {
            expiry,
            hash: EnvelopeHash::of(b"other"),
        },
        state: State::Tombstone,
    };
    let set = ItemSet::new(vec![sealed, other]);
    let fp = set.fingerprint(0, 2);
    let list = encode_ranges(&set.initiate());
    // 20 items from the hashes of 0..20 (one byte each), all held, expiry
    // 1,800,000,000 + i: the first message is 16 fingerprints.
    let many = ItemSet::new(
        (0..20u8)
            .map(|i| SyncItem {
                key: SyncKey {
                    expiry: 1_800_000_000 + u64::from(i),
                    hash: EnvelopeHash::of(&[i]),
                },
                state: State::Held,
            })
            .collect(),
    );
    let ranges = encode_ranges(&many.initiate());
    println!("fingerprint {}", hex(&fp));
    println!("list {}", hex(&list));
    println!("ranges ({} bytes) {}", ranges.len(), hex(&ranges[..40]));
    assert_eq!(hex(&fp), "87f13b1592277ea373fcd4150a5ef6a9");
    assert_eq!(
        hex(&list),
        "000202\
         0293b0789de575d8709b37bb6114b4233730bd8e341379e45d0e67cf178a3ea101\
         aa3e3407552b44a7a9d0c2cfa2a14efe235f3aee7dc9ae1f7e8f1c3e59fc080700"
    );
    assert_eq!(ranges.len(), 307);
    assert_eq!(
        hex(&ranges[..40]),
        "82a4a7da060001cd103db5804b1895b657d344392c86af0200019e268be2808399e647283e2d6fd6"
    );
}
