//! Reads the versions of the compared stacks from this project's
//! `Cargo.lock`, so the report names the versions actually built.

use std::{env, fs, path::Path};

/// Packages whose version the report prints, and the variable each goes to.
const PACKAGES: [(&str, &str); 6] = [
    ("shoal-p2p", "VERSION_SHOAL"),
    ("tentacle", "VERSION_TENTACLE"),
    ("tentacle-secio", "VERSION_TENTACLE_SECIO"),
    ("libp2p", "VERSION_LIBP2P"),
    ("libp2p-noise", "VERSION_LIBP2P_NOISE"),
    ("libp2p-stream", "VERSION_LIBP2P_STREAM"),
];

fn main() {
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let lock_path = Path::new(&dir).join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock_path.display());
    let lock = fs::read_to_string(&lock_path).unwrap_or_default();
    for (package, var) in PACKAGES {
        let version = locked_version(&lock, package).unwrap_or_else(|| "?".to_owned());
        println!("cargo:rustc-env={var}={version}");
    }
}

/// The version of `package` in a `Cargo.lock` (the first entry if several).
fn locked_version(lock: &str, package: &str) -> Option<String> {
    let name_line = format!("name = \"{package}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == name_line {
            let version = lines.next()?.trim();
            let version = version.strip_prefix("version = \"")?.strip_suffix('"')?;
            return Some(version.to_owned());
        }
    }
    None
}
