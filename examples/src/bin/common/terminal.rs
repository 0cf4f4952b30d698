//! The chat's input and output when standard input is a terminal: a line
//! editor in raw mode (so a paste of any length reaches the chat whole:
//! the terminal's own line mode cuts lines at 4,095 bytes), a prompt, and
//! lines printed above the line being typed instead of through it. Without
//! a terminal (a pipe, a file, a test), input is read line by line and
//! lines go straight to standard output.
//!
//! One limitation of the editor (rustyline 17 with its external printer):
//! keys that reach it together in one read outside a bracketed paste (a
//! terminal without bracketed paste pasting, or typing far ahead of a busy
//! machine) are shown one per later key press or printed line. Pastes from
//! terminals that bracket them, and typing, are not affected.

use std::sync::{Mutex, OnceLock, PoisonError};

use rustyline::error::ReadlineError;
use rustyline::{Config, DefaultEditor, ExternalPrinter};

use super::input::Input;

/// The prompt shown while the user types.
pub(crate) const PROMPT: &str = "> ";

type Printer = Box<dyn ExternalPrinter + Send>;

/// Where [`say`] sends lines while the editor runs.
static PRINTER: OnceLock<Mutex<Printer>> = OnceLock::new();

/// Prints one line for the user: above the prompt while the line editor
/// runs, else on standard output.
pub(crate) fn say(line: String) {
    match PRINTER.get() {
        Some(printer) => {
            let mut printer = printer.lock().unwrap_or_else(PoisonError::into_inner);
            if let Err(e) = printer.print(format!("{line}\n")) {
                tracing::debug!(%e, "line editor print failed");
                println!("{line}");
            }
        }
        None => println!("{line}"),
    }
}

/// Whether standard input and output are a terminal.
pub(crate) fn is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// Starts the line editor on a thread and sends what the user enters:
/// lines of at most `limit` bytes, longer ones as [`Input::TooLong`] (never
/// cut), bytes that are not UTF-8 as [`Input::NotText`]. Ctrl-C and Ctrl-D
/// end the input (the sender is dropped). `Err` if the terminal cannot be
/// used; then read plain lines instead.
pub(crate) fn spawn_editor(
    limit: usize,
    tx: tokio::sync::mpsc::Sender<Input>,
) -> Result<(), String> {
    let config = Config::builder()
        .auto_add_history(true)
        .bracketed_paste(true)
        .build();
    let mut editor = DefaultEditor::with_config(config).map_err(|e| e.to_string())?;
    let printer = editor
        .create_external_printer()
        .map_err(|e| e.to_string())?;
    if PRINTER.set(Mutex::new(Box::new(printer))).is_err() {
        return Err("the line editor is already running".to_owned());
    }
    std::thread::spawn(move || {
        loop {
            let input = match editor.readline(PROMPT) {
                Ok(line) if line.len() > limit => Input::TooLong(line.len()),
                Ok(line) => Input::Line(line.into_bytes()),
                Err(ReadlineError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                    Input::NotText
                }
                Err(ReadlineError::Eof | ReadlineError::Interrupted) => return,
                Err(e) => {
                    tracing::warn!(%e, "line editor failed; input ends");
                    return;
                }
            };
            if tx.blocking_send(input).is_err() {
                return;
            }
        }
    });
    Ok(())
}
