//! Dropping a lab removes it, also on panic; leftovers of dead processes
//! are removed by the next lab.

use std::io::{BufRead, BufReader};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_lab::{Lab, NatKind, machine_namespaces};

const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

fn assert_gone(namespaces: &[String]) {
    assert!(!namespaces.is_empty());
    let left: Vec<_> = machine_namespaces()
        .into_iter()
        .filter(|ns| namespaces.contains(ns))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

/// Waits (bounded) for `child` to end; true if it did.
fn ended(child: &mut Child) -> bool {
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while Instant::now() < deadline {
        if child.try_wait().expect("try_wait").is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// Starts `sh` through `cmd` (which names the shell) and returns once the
/// shell runs (inside its namespace, for `ip netns exec`): it prints a line,
/// then sleeps.
fn sleeper(cmd: &mut Command) -> Child {
    let mut child = cmd
        .args(["-c", "echo up; exec sleep 30"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start sleeper");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    // Ends with a line, or at EOF if the shell dies: bounded either way.
    BufReader::new(stdout).read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "up");
    child
}

#[test]
fn drop_removes_namespaces_and_processes() {
    let Some(mut lab) = Lab::new_or_skip() else {
        return;
    };
    lab.add_public_host("a").expect("a");
    let nat = lab.add_nat("home", NatKind::Double).expect("nat");
    let host = lab.add_host_behind(&nat, "b").expect("b");
    let mut child = sleeper(&mut host.command("sh"));
    let namespaces = lab.namespaces().to_vec();
    assert_eq!(namespaces.len(), 5, "{namespaces:?}");
    drop(lab);
    assert_gone(&namespaces);
    assert!(ended(&mut child), "a process in the lab outlived it");
}

#[test]
fn panic_in_a_test_still_removes_the_lab() {
    if Lab::new_or_skip().is_none() {
        return;
    }
    let mut namespaces = Vec::new();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut lab = Lab::new().expect("lab");
        lab.add_public_host("a").expect("a");
        namespaces = lab.namespaces().to_vec();
        panic!("a test failing with a lab in hand");
    }));
    assert!(result.is_err());
    assert_gone(&namespaces);
}

#[test]
fn new_lab_removes_leftovers_of_dead_processes() {
    if Lab::new_or_skip().is_none() {
        return;
    }
    let mut gone = Command::new("true").spawn().expect("spawn true");
    let dead_pid = gone.id();
    gone.wait().expect("wait");
    let stale = format!("shoal-lab-{dead_pid}-0-core");
    let status = Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .expect("ip");
    assert!(status.success());
    let mut child = sleeper(Command::new("ip").args(["netns", "exec", &stale, "sh"]));

    let lab = Lab::new().expect("lab");
    assert_gone(&[stale]);
    assert!(ended(&mut child), "a process in a stale namespace survived");
    drop(lab);
}
