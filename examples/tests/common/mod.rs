//! A child process of one of the example binaries, for the end-to-end
//! tests: its stdout lines arrive on a channel, lines can be typed on its
//! stdin, waits have deadlines, and it is killed (SIGKILL) when dropped.
#![allow(clippy::unwrap_used, dead_code)]

pub(crate) mod mailboxes;

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::Instant,
};

/// A running example binary.
pub(crate) struct Process {
    /// Used in failure messages.
    pub(crate) name: String,
    pub(crate) child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Every stdout line read so far.
    pub(crate) seen: Vec<String>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Starts `binary` with `args`, stdin piped, stderr discarded.
    pub(crate) fn start<I, S>(name: &str, binary: &str, args: I) -> Process
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::sync_channel(4096);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Process {
            name: name.to_owned(),
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    /// Types one line; a process that has died cannot read it, which is
    /// not an error here.
    pub(crate) fn type_line(&mut self, line: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{line}");
            let _ = stdin.flush();
        }
    }

    /// Takes the child's standard input, to write to it from another
    /// thread (a write that blocks then cannot stall the test).
    pub(crate) fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// Waits (until `deadline`) for a line at index `from` or later that
    /// satisfies `want`; returns its index and text.
    pub(crate) fn wait_from(
        &mut self,
        from: usize,
        what: &str,
        deadline: Instant,
        want: impl Fn(&str) -> bool,
    ) -> (usize, String) {
        if let Some(i) = (from..self.seen.len()).find(|&i| want(&self.seen[i])) {
            return (i, self.seen[i].clone());
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return (self.seen.len() - 1, line);
                    }
                }
                Err(_) => panic!("{}: no line {what}; saw {:#?}", self.name, self.seen),
            }
        }
    }

    /// Waits for any line satisfying `want`.
    pub(crate) fn wait(
        &mut self,
        what: &str,
        deadline: Instant,
        want: impl Fn(&str) -> bool,
    ) -> String {
        self.wait_from(0, what, deadline, want).1
    }

    /// Waits for a line starting with `prefix`.
    pub(crate) fn wait_line(&mut self, prefix: &str, deadline: Instant) -> String {
        self.wait(&format!("starting with {prefix:?}"), deadline, |l| {
            l.starts_with(prefix)
        })
    }

    /// The rest of the first line starting with `prefix`, trimmed.
    pub(crate) fn value(&mut self, prefix: &str, deadline: Instant) -> String {
        let line = self.wait_line(prefix, deadline);
        line[prefix.len()..].trim().to_owned()
    }

    /// Waits (until `deadline`) for the process to exit, and returns how.
    /// One still running then is killed, and the test fails with what it
    /// printed (a chat that will not quit says why).
    pub(crate) fn wait_exit(&mut self, deadline: Instant) -> std::process::ExitStatus {
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let seen = self.drain().to_vec();
                panic!("{}: did not exit; saw {seen:#?}", self.name);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Waits for `{sender}: m0` … `{sender}: m{n-1}`, then, after `settle`
    /// (time for a late duplicate to show), checks that each was shown
    /// exactly once and in order.
    pub(crate) fn expect_shown_once_in_order(
        &mut self,
        sender: &str,
        n: usize,
        settle: std::time::Duration,
        deadline: Instant,
    ) {
        let expected: Vec<String> = (0..n).map(|i| format!("{sender}: m{i}")).collect();
        for line in &expected {
            self.wait_line(line, deadline);
        }
        std::thread::sleep(settle);
        let prefix = format!("{sender}: m");
        let shown: Vec<String> = self
            .drain()
            .iter()
            .filter(|l| l.starts_with(&prefix))
            .cloned()
            .collect();
        assert_eq!(shown, expected, "once each, in order");
    }

    /// Every line printed so far, reading what is waiting in the pipe.
    pub(crate) fn drain(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }
}

/// A fresh directory under the system temp directory, created now and
/// removed (with everything in it) when dropped, also when a test panics.
pub(crate) struct TempDir(std::path::PathBuf);

impl TempDir {
    /// `<temp>/shoal-<tag>-<pid>-<nanos>`.
    pub(crate) fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("shoal-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port nobody listens on (bound, then released).
pub(crate) fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A line meant for people: no `Debug` dump of a nested error.
pub(crate) fn assert_readable(line: &str) {
    for debug in ["{", "Arc(", "Os ", "Custom", "kind:"] {
        assert!(!line.contains(debug), "debug output in {line:?}");
    }
}
