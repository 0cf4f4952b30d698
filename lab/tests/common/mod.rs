//! Helpers shared by the lab's integration tests: the probe binary, a
//! server inside a host, and a client that reports what the server saw.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::net::SocketAddrV4;
use std::time::Duration;

use shoal_lab::{Background, Host, output_within};

/// The probe binary built with these tests.
pub(crate) const PROBE: &str = env!("CARGO_BIN_EXE_lab-probe");
/// The port probe servers listen on.
pub(crate) const PORT: u16 = 7000;
/// How long a server may take to print "listening".
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connect timeout for connections that should work.
pub(crate) const WORKS: Duration = Duration::from_secs(5);
/// Connect timeout for connections that should fail: dropped packets make
/// them wait this long.
pub(crate) const FAILS: Duration = Duration::from_millis(1000);
/// Extra time given to the probe process on top of its own timeout.
const PROCESS_SLACK: Duration = Duration::from_secs(10);

/// Starts `lab-probe serve PORT` in `host` and waits until it listens.
pub(crate) fn serve(host: &Host) -> Background {
    let mut cmd = host.command(PROBE);
    cmd.args(["serve", &PORT.to_string()]);
    let mut server = Background::spawn(cmd).expect("start probe server");
    let line = server.next_line(READY_TIMEOUT).expect("server ready");
    assert!(
        line.starts_with("listening"),
        "unexpected first line {line:?}"
    );
    server
}

/// What a probe connection reported.
#[derive(Debug)]
pub(crate) struct Seen {
    /// The client's address as the server saw it.
    pub(crate) addr: SocketAddrV4,
    /// Time to complete the TCP handshake, in milliseconds.
    pub(crate) connect_ms: f64,
    /// Time for the whole exchange, in milliseconds.
    pub(crate) total_ms: f64,
}

/// Runs `lab-probe connect` from `host` to `to` with extra `args`; `Err`
/// holds the probe's complaint.
pub(crate) fn connect(
    host: &Host,
    to: SocketAddrV4,
    args: &[&str],
    timeout: Duration,
) -> Result<Seen, String> {
    let mut cmd = host.command(PROBE);
    cmd.args(["connect", &to.to_string(), "--timeout-ms"])
        .arg(timeout.as_millis().to_string())
        .args(args);
    let output = output_within(&mut cmd, timeout * 4 + PROCESS_SLACK).map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| {
        stdout
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .ok_or_else(|| format!("no {name} in {stdout:?}"))
    };
    Ok(Seen {
        addr: field("observed")?.parse().map_err(|e| format!("{e}"))?,
        connect_ms: field("connect_ms")?.parse().map_err(|e| format!("{e}"))?,
        total_ms: field("total_ms")?.parse().map_err(|e| format!("{e}"))?,
    })
}

/// `connect` that must succeed.
pub(crate) fn reach(host: &Host, to: SocketAddrV4, args: &[&str]) -> Seen {
    connect(host, to, args, WORKS)
        .unwrap_or_else(|e| panic!("{} could not reach {to}: {e}", host.name()))
}

/// `connect` that must fail.
pub(crate) fn cannot_reach(host: &Host, to: SocketAddrV4) {
    match connect(host, to, &[], FAILS) {
        Ok(seen) => panic!("{} reached {to}: {seen:?}", host.name()),
        Err(why) => println!("{} -> {to} failed as it should: {why}", host.name()),
    }
}
