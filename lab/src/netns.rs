//! Network namespaces: naming, creating, configuring and removing them.
//!
//! Every namespace of a lab is called `shoal-lab-<pid>-<n>-<role>`, where
//! `<pid>` is the process that built the lab and `<n>` counts labs within
//! that process. Tests running at once (threads of one test binary, or
//! several binaries) therefore never share a name, and a later lab can tell
//! which leftovers belong to a process that is gone.
//!
//! Interfaces are always created directly inside lab namespaces (`ip link add
//! ... peer ... netns`), never in the root namespace, so their names only
//! need to be unique within one namespace and stay short (`eth0`, `wan`,
//! `lan`, `h7`, `p3`), well under Linux's 15-character limit.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::LabError;
use crate::process::{checked, in_namespace};

/// Start of every lab namespace name.
pub(crate) const PREFIX: &str = "shoal-lab-";

/// Longest host or NAT name accepted; keeps namespace names readable.
pub const MAX_NAME_LEN: usize = 24;

/// Where `ip netns` keeps its namespace handles.
const NETNS_DIR: &str = "/run/netns";

static NEXT_LAB: AtomicU64 = AtomicU64::new(0);

/// A fresh `shoal-lab-<pid>-<n>` tag for a new lab.
pub(crate) fn new_tag() -> String {
    let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{}-{n}", std::process::id())
}

/// The file `ip netns` mounts for `namespace`; opening it and calling
/// `setns` enters the namespace.
pub(crate) fn handle_path(namespace: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(namespace)
}

/// Checks that a user-chosen name fits into namespace names.
pub(crate) fn check_name(name: &str) -> Result<(), LabError> {
    let bad = |reason| {
        Err(LabError::BadName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return bad("must be 1 to 24 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("only a-z, 0-9 and '-' are allowed");
    }
    if name.starts_with('-') {
        return bad("must not start with '-'");
    }
    if name == "core" || name.ends_with("-cgn") {
        return bad("'core' and names ending in '-cgn' are used by the lab itself");
    }
    Ok(())
}

/// Creates a namespace.
pub(crate) fn create(namespace: &str) -> Result<(), LabError> {
    checked(Command::new("ip").args(["netns", "add", namespace]), None).map(drop)
}

/// Brings up the loopback interface (down in a new namespace).
pub(crate) fn loopback_up(namespace: &str) -> Result<(), LabError> {
    batch(namespace, &["link set lo up".to_owned()])
}

/// Runs `ip` commands (one per line, without the leading `ip`) inside
/// `namespace` with a single process.
pub(crate) fn batch(namespace: &str, lines: &[String]) -> Result<(), LabError> {
    let mut input = lines.join("\n");
    input.push('\n');
    checked(
        Command::new("ip").args(["-n", namespace, "-batch", "-"]),
        Some(&input),
    )
    .map(drop)
}

/// Turns on IPv4 forwarding: the namespace becomes a router.
pub(crate) fn enable_forwarding(namespace: &str) -> Result<(), LabError> {
    checked(
        in_namespace(namespace, "sysctl").args(["-qw", "net.ipv4.ip_forward=1"]),
        None,
    )
    .map(drop)
}

/// Adds iptables rules (in `iptables-restore` format) without flushing what
/// is there.
pub(crate) fn iptables_restore(namespace: &str, rules: &str) -> Result<(), LabError> {
    checked(
        in_namespace(namespace, "iptables-restore").arg("--noflush"),
        Some(rules),
    )
    .map(drop)
}

/// Runs one `iptables` command inside `namespace`.
pub(crate) fn iptables(
    namespace: &str,
    args: impl IntoIterator<Item = impl AsRef<OsStr>>,
) -> Result<(), LabError> {
    checked(in_namespace(namespace, "iptables").args(args), None).map(drop)
}

/// Kills every process living in `namespaces`, then deletes them. Best
/// effort: cleanup runs in `Drop`, where there is nobody to report to, and a
/// namespace that is already gone is fine.
pub(crate) fn remove(namespaces: &[String]) {
    if namespaces.is_empty() {
        return;
    }
    for pid in processes_in(namespaces) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let lines: Vec<String> = namespaces
        .iter()
        .rev()
        .map(|ns| format!("netns del {ns}"))
        .collect();
    let mut input = lines.join("\n");
    input.push('\n');
    // -force: go on with the next line when one fails.
    let _ = checked(
        Command::new("ip").args(["-force", "-batch", "-"]),
        Some(&input),
    );
}

/// Removes lab namespaces left behind by processes that no longer exist
/// (a test binary killed with SIGKILL never runs `Drop`).
pub(crate) fn remove_stale() {
    let stale: Vec<String> = list()
        .into_iter()
        .filter(|ns| owner_pid(ns).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()))
        .collect();
    remove(&stale);
}

/// Names of all namespaces `ip netns` knows, ours or not.
pub(crate) fn list() -> Vec<String> {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect()
}

/// The pid in a lab namespace name, `None` for namespaces that are not a
/// lab's.
fn owner_pid(namespace: &str) -> Option<u32> {
    let rest = namespace.strip_prefix(PREFIX)?;
    let pid: u32 = rest.split('-').next()?.parse().ok()?;
    (pid != std::process::id()).then_some(pid)
}

/// Processes (other than ourselves) whose network namespace is one of
/// `namespaces`, found by comparing namespace inodes under `/proc`.
fn processes_in(namespaces: &[String]) -> Vec<i32> {
    let inodes: HashSet<u64> = namespaces
        .iter()
        .filter_map(|ns| fs::metadata(handle_path(ns)).ok())
        .map(|meta| meta.ino())
        .collect();
    let Ok(proc_dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    proc_dir
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let ino = fs::metadata(entry.path().join("ns/net")).ok()?.ino();
            (pid != me && inodes.contains(&ino)).then_some(i32::try_from(pid).ok()?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("alice").is_ok());
        assert!(check_name("home-2").is_ok());
        for bad in ["", "Alice", "a b", "-x", "core", "x-cgn", "a/b"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_name(&"a".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn owner_pid_is_parsed() {
        assert_eq!(owner_pid("shoal-lab-1-0-core"), Some(1));
        assert_eq!(owner_pid("shoal-lab-77-3-home-cgn"), Some(77));
        assert_eq!(owner_pid(&format!("{}-core", new_tag())), None);
        assert_eq!(owner_pid("other-1-0"), None);
    }

    #[test]
    fn tags_are_unique() {
        assert_ne!(new_tag(), new_tag());
    }
}
