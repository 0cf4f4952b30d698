//! Running outside commands with a bound on every wait.
//!
//! The lab drives `ip` and `iptables`, and tests run probes inside hosts.
//! Nothing here waits without a deadline: a hung command is killed and
//! reported as [`LabError::Timeout`].

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread;
use std::time::{Duration, Instant};

use crate::LabError;

/// How long one `ip`/`iptables` call may take before the lab gives up on it.
/// They normally take milliseconds; this only stops a wedged call from
/// hanging a test forever.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines a [`Background`] process may have printed but not yet been read.
/// Past this its reader stops taking lines, so the child blocks on a full pipe
/// instead of growing our memory.
const BACKGROUND_LINE_BACKLOG: usize = 4096;

/// The command line of `cmd`, for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs `cmd` to completion, feeding it `stdin`, and returns its output
/// whatever its exit status. Fails only when it cannot be started or does
/// not finish within `timeout` (then it is killed).
pub fn output_within(cmd: &mut Command, timeout: Duration) -> Result<Output, LabError> {
    run(cmd, None, timeout)
}

/// Like [`output_within`] with input on standard input.
pub(crate) fn run(
    cmd: &mut Command,
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<Output, LabError> {
    let command = describe(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| LabError::Spawn {
        command: command.clone(),
        source,
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // Inputs are a few lines, far below a pipe's buffer, so this does
        // not block on a child that reads late. A child that exits without
        // reading shows up in its status below.
        let _ = pipe.write_all(input.as_bytes());
    }
    // Two readers finish when the child closes its pipes (normally: exits).
    let (done_tx, done_rx) = sync_channel::<()>(2);
    let stdout = reader(child.stdout.take(), done_tx.clone());
    let stderr = reader(child.stderr.take(), done_tx);
    let deadline = Instant::now() + timeout;
    let finished = (0..2).all(|_| {
        let left = deadline.saturating_duration_since(Instant::now());
        done_rx.recv_timeout(left).is_ok()
    });
    if !finished {
        let _ = child.kill();
        let _ = child.wait();
        return Err(LabError::Timeout { command, timeout });
    }
    let status = child.wait().map_err(|source| LabError::Spawn {
        command: command.clone(),
        source,
    })?;
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Runs `cmd` (with optional stdin) and fails unless it exits successfully.
pub(crate) fn checked(cmd: &mut Command, stdin: Option<&str>) -> Result<Output, LabError> {
    let output = run(cmd, stdin, COMMAND_TIMEOUT)?;
    if output.status.success() {
        return Ok(output);
    }
    let mut command = describe(cmd);
    if let Some(input) = stdin {
        command.push_str(" <<< ");
        command.push_str(input.trim_end());
    }
    Err(LabError::Failed {
        command,
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

/// `ip netns exec <namespace> <program>`, ready for arguments.
pub(crate) fn in_namespace(namespace: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", namespace]).arg(program);
    cmd
}

fn reader(
    pipe: Option<impl Read + Send + 'static>,
    done: SyncSender<()>,
) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        let _ = done.send(());
        bytes
    })
}

/// A long-running child process (a server inside a lab host, say) that is
/// killed when this value is dropped, including on a panic.
///
/// Its standard output is read line by line; [`Background::next_line`] waits
/// for the next one with a timeout, which is how a caller learns that a
/// server is ready without sleeping. Standard error is inherited. One
/// started with [`Background::spawn_interactive`] also reads the lines
/// [`Background::type_line`] writes, as a user at a terminal would.
#[derive(Debug)]
pub struct Background {
    child: Child,
    command: String,
    lines: Receiver<String>,
    stdin: Option<ChildStdin>,
}

impl Background {
    /// Starts `cmd` with its standard output piped to us.
    pub fn spawn(cmd: Command) -> Result<Background, LabError> {
        Self::start(cmd, false)
    }

    /// Starts `cmd` with its standard input and output piped to us.
    pub fn spawn_interactive(cmd: Command) -> Result<Background, LabError> {
        Self::start(cmd, true)
    }

    fn start(mut cmd: Command, interactive: bool) -> Result<Background, LabError> {
        let command = describe(&cmd);
        let stdin = if interactive {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        cmd.stdin(stdin).stdout(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
        let (tx, lines) = sync_channel(BACKGROUND_LINE_BACKLOG);
        if let Some(stdout) = child.stdout.take() {
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Background {
            stdin: child.stdin.take(),
            child,
            command,
            lines,
        })
    }

    /// Writes `line` and a newline to the process's standard input.
    pub fn type_line(&mut self, line: &str) -> Result<(), LabError> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(LabError::Ended {
                command: self.command.clone(),
            });
        };
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|_| LabError::Ended {
                command: self.command.clone(),
            })
    }

    /// Reads lines until one satisfies `want` and returns it; the lines
    /// before it are passed over. Waits at most `timeout` in all.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        mut want: impl FnMut(&str) -> bool,
    ) -> Result<String, LabError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.next_line(left).map_err(|e| match e {
                LabError::Timeout { command, .. } => LabError::Timeout { command, timeout },
                other => other,
            })?;
            if want(&line) {
                return Ok(line);
            }
        }
    }

    /// The next line the process printed, waiting at most `timeout`.
    pub fn next_line(&mut self, timeout: Duration) -> Result<String, LabError> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => Ok(line),
            Err(RecvTimeoutError::Timeout) => Err(LabError::Timeout {
                command: self.command.clone(),
                timeout,
            }),
            Err(RecvTimeoutError::Disconnected) => Err(LabError::Ended {
                command: self.command.clone(),
            }),
        }
    }

    /// Stops keeping what the process prints from now on, so a long-running
    /// server never blocks on a full pipe while nobody reads it.
    /// [`Background::next_line`] then reports [`LabError::Ended`].
    pub fn discard_further_output(&mut self) {
        let (_, none) = sync_channel(0);
        let lines = std::mem::replace(&mut self.lines, none);
        thread::spawn(move || for _ in lines {});
    }

    /// The child's process id (for `ip netns exec`, the program's own id).
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
