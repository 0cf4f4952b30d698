//! `--on-wake`: the node as a wake-up endpoint. Devices register it with
//! the nodes keeping their mailboxes (`chat --wake-endpoint … --wake-token
//! …`); when one of those wakes it with this node's token, it prints
//! `woken by <peer id>` and runs the hook command with `sh -c`, the token
//! and the waking node's peer id in `SHOAL_WAKE_TOKEN` and
//! `SHOAL_WAKE_FROM`. One hook runs at a time: a wake-up that comes while
//! it runs is printed and skipped (the running hook covers it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use shoal::PeerId;
use shoal_identity::Keypair;
use shoal_mailbox::WakeToken;
use shoal_messenger::service_node::MailboxNode;
use shoal_transport::Multiaddr;

/// Prints the endpoint and token to give devices, and runs `command` on
/// each wake-up with this node's token.
pub(crate) fn install(
    mailboxes: &MailboxNode,
    key: &Keypair,
    own_addr: &Multiaddr,
    command: String,
) {
    let token = WakeToken::of_endpoint(key);
    println!("wake-up endpoint: {own_addr} token {}", token.to_hex());
    let running = Arc::new(AtomicBool::new(false));
    mailboxes.on_wake(vec![token], move |token, from: PeerId| {
        if running.swap(true, Ordering::AcqRel) {
            println!("woken by {from}; the hook is still running");
            return;
        }
        println!("woken by {from}");
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .env("SHOAL_WAKE_TOKEN", token.to_hex())
            .env("SHOAL_WAKE_FROM", from.to_string())
            .stdin(std::process::Stdio::null())
            .spawn();
        let running = running.clone();
        match child {
            Ok(mut child) => {
                // Reaped on a thread of its own: the node goes on serving.
                std::thread::spawn(move || {
                    match child.wait() {
                        Ok(status) if !status.success() => println!("wake hook: {status}"),
                        Ok(_) => {}
                        Err(e) => println!("wake hook: {e}"),
                    }
                    running.store(false, Ordering::Release);
                });
            }
            Err(e) => {
                println!("wake hook: {e}");
                running.store(false, Ordering::Release);
            }
        }
    });
}
