//! One process per data directory: the store's lock.

#![allow(clippy::unwrap_used)]

use shoal_messenger::SqliteStore;
use shoal_messenger::sqlite::lock_path;

#[test]
fn a_second_store_on_one_file_fails_at_once_and_the_lock_goes_with_the_first() {
    let dir = std::env::temp_dir().join(format!(
        "shoal-store-lock-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("messenger.db");
    let first = SqliteStore::open(&db).unwrap();
    assert!(lock_path(&db).exists());
    let Err(err) = SqliteStore::open(&db) else {
        panic!("a second store opened");
    };
    let text = err.to_string();
    assert!(text.contains("in use by another process"), "{text}");
    drop(first);
    SqliteStore::open(&db).expect("reopened after the first closed");
    let _ = std::fs::remove_dir_all(&dir);
}
