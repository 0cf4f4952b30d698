//! The chat in a terminal, driven through a pseudo-terminal as a user's
//! terminal emulator would: a prompt, a line being typed that incoming
//! messages do not break, pastes of 100 KB refused with the limit named
//! and of 20 KB sent whole (a terminal in its usual line mode would cut
//! both at 4,095 bytes), and bytes that are not UTF-8 answered, not fatal.

#![allow(clippy::unwrap_used)]

mod common;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Process, TempDir};
use portable_pty::{CommandBuilder, PtySize, native_pty_system};

const LIMIT: Duration = Duration::from_secs(60);

/// A chat on the far side of a pseudo-terminal.
struct Terminal {
    output: Arc<Mutex<Vec<u8>>>,
    writer: Box<dyn Write + Send>,
    child: Box<dyn portable_pty::Child + Send + Sync>,
    /// How much of the output earlier waits consumed.
    seen: usize,
}

impl Terminal {
    fn start(data_dir: &Path, args: &[&str]) -> Terminal {
        let pty = native_pty_system()
            .openpty(PtySize {
                rows: 50,
                cols: 200,
                pixel_width: 0,
                pixel_height: 0,
            })
            .unwrap();
        let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_chat"));
        cmd.arg("--data-dir");
        cmd.arg(data_dir.as_os_str());
        cmd.args(args.iter().map(OsStr::new));
        cmd.env("RUST_LOG", "warn");
        let child = pty.slave.spawn_command(cmd).unwrap();
        drop(pty.slave);
        let mut reader = pty.master.try_clone_reader().unwrap();
        let writer = pty.master.take_writer().unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&output);
        std::thread::spawn(move || {
            // Keep the master side alive as long as the reader.
            let _master = pty.master;
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Terminal {
            output,
            writer,
            child,
            seen: 0,
        }
    }

    /// The output so far as text, without terminal control sequences.
    fn screen(&self) -> String {
        plain(&String::from_utf8_lossy(&self.output.lock().unwrap()))
    }

    /// Waits for `needle` after what earlier waits consumed; returns the
    /// text up to and including it.
    fn wait(&mut self, what: &str, needle: &str, deadline: Instant) -> String {
        loop {
            let screen = self.screen();
            if let Some(at) = screen.get(self.seen..).and_then(|s| s.find(needle)) {
                let end = self.seen + at + needle.len();
                let text = screen[self.seen..end].to_owned();
                self.seen = end;
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} ({needle:?}); the terminal shows:\n{}",
                tail(&screen, 3000)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
        self.writer.flush().unwrap();
    }

    /// Types `text` one key at a time, as a person does (keys that reach
    /// the editor together outside a paste are shown late: see the chat's
    /// terminal module).
    fn type_keys(&mut self, text: &str) {
        for b in text.bytes() {
            self.write(&[b]);
            std::thread::sleep(Duration::from_millis(3));
        }
    }

    /// A paste as a terminal sends it once the application asked for
    /// bracketed paste (the text between markers), then Enter once the
    /// editor shows the end of it.
    fn paste_and_enter(&mut self, text: &str, deadline: Instant) {
        self.write(b"\x1b[200~");
        for chunk in text.as_bytes().chunks(4096) {
            self.write(chunk);
        }
        self.write(b"\x1b[201~");
        let end: String = text
            .chars()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        self.wait("the paste shown", &end, deadline);
        self.type_keys("\r");
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `text` without ANSI escape sequences and carriage returns.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() || c == '~' {
                            break;
                        }
                    }
                }
                Some(']') => {
                    for c in chars.by_ref() {
                        if c == '\x07' {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[test]
fn the_chat_in_a_terminal_keeps_the_typed_line_and_takes_pastes_whole() {
    let deadline = Instant::now() + LIMIT;
    let root = TempDir::new("chat-tty");
    let mut bob = Process::start(
        "bob",
        env!("CARGO_BIN_EXE_chat"),
        [OsStr::new("--data-dir"), root.join("bob").as_os_str()],
    );
    let bob_id = bob.value("user id:", deadline);
    let bob_addr = bob.value("listening on:", deadline);

    let mut alice = Terminal::start(&root.join("alice"), &["--bootstrap", &bob_addr]);
    alice.wait("alice's id", "user id: ", deadline);
    let alice_id = alice
        .wait("the id itself", "\n", deadline)
        .trim()
        .to_owned();
    alice.wait("the prompt", "> ", deadline);
    bob.type_line(&format!("/add {alice_id} alice"));
    bob.wait("the contact added", deadline, |l| {
        l.starts_with("added alice")
    });

    alice.type_keys(&format!("/add {bob_id} bob\r"));
    alice.wait("the contact added", "added bob", deadline);
    alice.type_keys("/msg bob first\r");
    bob.wait("alice's first message", deadline, |l| l == "alice: first");

    // Alice types half a line; bob's message arrives meanwhile. It is
    // printed above the prompt, and what she typed is shown again after it.
    alice.type_keys("half a li");
    alice.wait("her typing echoed", "half a li", deadline);
    bob.type_line("/msg alice interrupting you");
    alice.wait("bob's message", "bob: interrupting you", deadline);
    alice.wait("her line redrawn after it", "> half a li", deadline);
    alice.type_keys("ne\r");
    // The line went to nobody (no conversation chosen), but whole.
    alice.wait(
        "the answer to the whole line",
        "no conversation selected",
        deadline,
    );

    // A 100 KB paste: refused with its length and the limit, never cut.
    let big = format!("/msg bob {}-the-end-of-it", "x".repeat(100 * 1024));
    alice.paste_and_enter(&big, deadline);
    let refusal = alice.wait("the refusal", "not sent", deadline);
    let expected = format!("line too long: {} bytes (limit 32768)", big.len());
    assert!(refusal.contains(&expected), "{}", tail(&refusal, 300));
    // A 20 KB paste (with a line break inside) arrives whole.
    let text = format!("{}\n{}", "a".repeat(10_000), "b".repeat(10_000));
    alice.paste_and_enter(&format!("/msg bob {text}"), deadline);
    // Bob's chat shows the line break as a replacement character.
    let got = bob.wait("the pasted message", deadline, |l| {
        l.starts_with("alice: aaaa")
    });
    assert_eq!(
        got,
        format!(
            "alice: {}\u{fffd}{}",
            "a".repeat(10_000),
            "b".repeat(10_000)
        )
    );
    alice.wait("its delivery", "delivered to bob: aaaa", deadline);

    // Bytes that are not UTF-8: an answer, and the chat goes on.
    alice.write(b"\xff\xfe\r");
    alice.wait("the answer", "not UTF-8 text", deadline);
    alice.type_keys("/msg bob still here\r");
    bob.wait("the next message", deadline, |l| l == "alice: still here");

    alice.type_keys("/quit\r");
    let by = Instant::now() + Duration::from_secs(10);
    while alice.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < by, "alice did not exit on /quit");
        std::thread::sleep(Duration::from_millis(50));
    }
}
