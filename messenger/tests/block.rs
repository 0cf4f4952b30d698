//! Blocking and removing a contact, through the public `Engine` API on
//! real `SqliteStore`s: a blocked sender gets nothing (no acknowledgement,
//! no reset request), is counted, and is heard again once added back; a
//! removed contact's next envelopes do not bring the erased conversation
//! back.
#![allow(clippy::unwrap_used)]

mod pair;

use std::time::Duration;

use pair::Pair;
use shoal_im::engine::{EngineConfig, Event};

fn configs() -> [EngineConfig; 2] {
    [EngineConfig::default(), EngineConfig::default()]
}

fn received_by(pair: &Pair, side: usize) -> usize {
    pair.events
        .iter()
        .filter(|(s, e)| *s == side && matches!(e, Event::Received { .. }))
        .count()
}

#[test]
fn a_blocked_contact_is_not_heard_until_added_back() {
    let mut pair = Pair::new(31, configs());
    let users = pair.users();
    pair.send(0, "hello");
    assert!(pair.run_until_identical(Duration::from_secs(10)).is_some());
    pair.engine(1).block(users[0]).unwrap();
    assert!(pair.engine(1).is_blocked(&users[0]));

    let before = received_by(&pair, 1);
    let sent = pair.send(0, "are you there?");
    let until = pair.now + Duration::from_secs(120);
    pair.run_until(until);
    assert_eq!(received_by(&pair, 1), before, "a blocked sender was shown");
    assert_eq!(
        pair.engine(0).outbox_len(&users[1]),
        1,
        "it was acknowledged"
    );
    assert!(pair.engine(1).refusals().count("blocked") >= 1);
    assert_eq!(pair.engine(1).reset_requests_sent(), 0);
    // Nothing goes to a blocked contact either.
    let requests_before = pair.wire.iter().filter(|(s, _)| *s == 1).count();
    let until = pair.now + Duration::from_secs(60);
    pair.run_until(until);
    assert_eq!(
        pair.wire.iter().filter(|(s, _)| *s == 1).count(),
        requests_before
    );

    // Added back: the waiting message arrives with alice's next retry.
    pair.engine(1).add_contact(users[0], "alice").unwrap();
    assert!(pair.run_until_identical(Duration::from_secs(60)).is_some());
    assert!(pair.sides[1].history_ids(users[0]).contains(&sent));
}

#[test]
fn a_removed_contact_does_not_bring_the_conversation_back() {
    let mut pair = Pair::new(32, configs());
    let users = pair.users();
    for i in 0..3 {
        pair.send(0, &format!("before {i}"));
    }
    assert!(pair.run_until_identical(Duration::from_secs(10)).is_some());
    pair.engine(1).remove_contact(users[0]).unwrap();
    assert!(pair.sides[1].history_ids(users[0]).is_empty());

    // Alice, who still holds the session, writes again and again.
    pair.send(0, "after the removal");
    let until = pair.now + Duration::from_secs(300);
    pair.run_until(until);
    assert!(
        pair.sides[1].history_ids(users[0]).is_empty(),
        "the erased conversation came back"
    );
    assert_eq!(pair.engine(1).reset_requests_sent(), 0);
    let bob = pair.engine(1).contacts().remove(0);
    assert!(bob.blocked && !bob.has_session && bob.outbox == 0);
}
