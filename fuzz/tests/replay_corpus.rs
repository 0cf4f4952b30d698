//! Replays every committed fuzz input (seed corpus and regression inputs)
//! through the target bodies, so CI checks them without a fuzzer.

use std::path::PathBuf;

#[test]
fn every_corpus_input_runs_cleanly() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut total = 0;
    for target in shoal_fuzz_targets::TARGETS {
        let dir = root.join(target);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus directory {}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        entries.sort();
        assert!(!entries.is_empty(), "no seeds for {target}");
        for path in entries {
            let data = std::fs::read(&path).expect("read corpus file");
            assert!(shoal_fuzz_targets::run(target, &data));
            total += 1;
        }
    }
    println!("replayed {total} corpus inputs");
}
