//! 10,000 strangers with fresh keys write to bob (the `strangers` bench
//! program, run whole): his requests, memory and files stay within the
//! documented quotas, he sends them nothing, and a genuine new contact's
//! request still arrives and is shown once accepted.

use std::collections::HashMap;
use std::process::Command;

use shoal_im::engine::{MAX_REQUESTS, REQUEST_BYTES_TOTAL, REQUEST_MESSAGES_TOTAL};

#[test]
fn ten_thousand_strangers_stay_within_the_quotas() {
    let out = Command::new(env!("CARGO_BIN_EXE_strangers"))
        .args(["--strangers", "10000"])
        .output()
        .expect("run the strangers program");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figures: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once(' ')).collect();
    let n = |key: &str| -> u64 {
        figures
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} missing from\n{text}"))
    };
    assert_eq!(n("request_events"), 10_000, "{text}");
    assert_eq!(n("other_events"), 0);
    assert_eq!(n("envelopes_sent_to_strangers"), 0);
    assert!(n("unnamed_contacts") <= MAX_REQUESTS as u64);
    assert!(n("unnamed_contacts") > 0);
    assert!(n("request_bytes") <= REQUEST_BYTES_TOTAL);
    assert!(n("request_messages") <= u64::from(REQUEST_MESSAGES_TOTAL));
    assert_eq!(n("held_bytes_in_memory"), 0);
    assert_eq!(n("requests_dropped") + n("unnamed_contacts"), 10_000);
    assert!(
        n("refused_over_quota") > 0,
        "the bursts went over the per-stranger quota"
    );
    assert_eq!(n("reopened_unnamed_contacts"), n("unnamed_contacts"));
    assert_eq!(figures.get("genuine_request_arrived"), Some(&"true"));
    assert_eq!(
        figures.get("genuine_message_shown_on_accept"),
        Some(&"true")
    );
    assert!(n("genuine_acknowledgements") > 0);
    // 10,000 messages of 16 KiB would be 160 MB; the quota is 1 MiB, plus
    // the sessions and the pages SQLite keeps for reuse.
    assert!(
        n("db_files_bytes") < 8 * 1024 * 1024,
        "database files of {} bytes",
        n("db_files_bytes")
    );
    // Bob's live heap after the flood, over his baseline: bounded by the
    // quotas, not by the number of strangers.
    assert!(
        n("flood_heap_bytes") < n("baseline_heap_bytes") + 16 * 1024 * 1024,
        "{text}"
    );
}
