//! Standard input, one bounded line at a time: a line longer than the
//! limit is never held in memory; it is read through to its end and
//! reported by its length, and the lines after it come through as usual.

use std::io::BufRead;

/// One line of input, without its line ending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    /// A line of at most the limit.
    Line(Vec<u8>),
    /// A line over the limit, of this many bytes; its text was discarded.
    TooLong(usize),
    /// A line that is not UTF-8 text (from the line editor, which cannot
    /// hold it; plain lines come as [`Input::Line`] whatever their bytes).
    NotText,
}

/// Reads the next line of at most `limit` bytes (a trailing `\r` is not
/// counted); `Ok(None)` at the end of input. At most `limit + 2` bytes of
/// a line are kept, whatever its length.
pub(crate) fn read_line(reader: &mut impl BufRead, limit: usize) -> std::io::Result<Option<Input>> {
    let keep = limit.saturating_add(2);
    let mut line = Vec::new();
    let mut total = 0usize;
    let mut last = None;
    let mut over = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            if total == 0 && last.is_none() {
                return Ok(None);
            }
            break;
        }
        let (chunk, newline) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], true),
            None => (available, false),
        };
        total = total.saturating_add(chunk.len());
        if let Some(&b) = chunk.last() {
            last = Some(b);
        }
        if !over {
            let room = keep - line.len();
            if chunk.len() > room {
                over = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = chunk.len() + usize::from(newline);
        reader.consume(used);
        if newline {
            last = last.or(Some(b'\n'));
            break;
        }
    }
    if last == Some(b'\r') {
        total -= 1;
        line.pop();
    }
    Ok(Some(if over || total > limit {
        Input::TooLong(total)
    } else {
        Input::Line(line)
    }))
}

/// Reads standard input on a thread (tokio's stdin would keep the runtime
/// from shutting down while a read blocks) and sends its lines; stops at
/// the end of input or when the receiver is gone.
pub(crate) fn spawn_stdin(limit: usize, tx: tokio::sync::mpsc::Sender<Input>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            match read_line(&mut stdin, limit) {
                Ok(Some(input)) => {
                    if tx.blocking_send(input).is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%e, "standard input failed");
                    break;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[u8], limit: usize) -> Vec<Input> {
        // A small buffer, so lines span many reads.
        let mut reader = std::io::BufReader::with_capacity(3, text);
        let mut out = Vec::new();
        while let Some(input) = read_line(&mut reader, limit).unwrap() {
            out.push(input);
        }
        out
    }

    fn line(text: &str) -> Input {
        Input::Line(text.as_bytes().to_vec())
    }

    #[test]
    fn lines_up_to_the_limit_pass_longer_ones_are_counted() {
        assert_eq!(
            lines(b"12345\n123456\r\n1234567\nok\n\n12\r\n1234567890123", 6),
            vec![
                line("12345"),
                line("123456"),
                Input::TooLong(7),
                line("ok"),
                line(""),
                line("12"),
                Input::TooLong(13),
            ]
        );
        assert_eq!(lines(b"", 6), vec![]);
        assert_eq!(lines(b"\r\n", 6), vec![line("")]);
        assert_eq!(
            lines(b"1234567\r\nx", 6),
            vec![Input::TooLong(7), line("x")]
        );
    }

    #[test]
    fn a_huge_line_is_not_kept() {
        let mut text = vec![b'x'; 1 << 20];
        text.extend_from_slice(b"\nafter\n");
        assert_eq!(
            lines(&text, 100),
            vec![Input::TooLong(1 << 20), line("after")]
        );
    }
}
