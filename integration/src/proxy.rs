//! A man in the middle for tests: forwards bytes between a client and a
//! server and lets the test corrupt, replay or inspect them.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What to do to the byte stream flowing in one direction.
#[derive(Debug, Clone, Copy)]
pub enum Tamper {
    /// Forward unchanged.
    None,
    /// XOR the byte at this absolute offset with `mask` (non-zero).
    FlipByte {
        /// Offset from the start of the direction's stream.
        offset: u64,
        /// Bits to flip.
        mask: u8,
    },
    /// Send the bytes in `[start, start + len)` a second time right after
    /// they were first sent (a replay).
    Replay {
        /// Offset of the first replayed byte.
        start: u64,
        /// Number of bytes replayed.
        len: u64,
    },
    /// Treat the stream as secio frames (`u16 length | body`, handshake
    /// messages included) and send frame number `n` (0-based) twice.
    ReplayFrame(usize),
}

/// Copies `from` into `to`, applying `tamper`, until either side ends.
/// Returns the number of bytes read from `from`.
pub async fn forward<R, W>(mut from: R, mut to: W, tamper: Tamper) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if let Tamper::ReplayFrame(n) = tamper {
        return forward_frames(from, to, n).await;
    }
    let mut buf = vec![0u8; 16 * 1024];
    let mut offset = 0u64;
    let mut replay = Vec::new();
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(offset);
        }
        let chunk = &mut buf[..n];
        let end = offset + n as u64;
        match tamper {
            Tamper::None | Tamper::ReplayFrame(_) => {}
            Tamper::FlipByte { offset: at, mask } => {
                if (offset..end).contains(&at) {
                    chunk[(at - offset) as usize] ^= mask;
                }
            }
            Tamper::Replay { start, len } => {
                let lo = start.max(offset);
                let hi = (start + len).min(end);
                if lo < hi {
                    replay
                        .extend_from_slice(&chunk[(lo - offset) as usize..(hi - offset) as usize]);
                }
            }
        }
        to.write_all(chunk).await?;
        if let Tamper::Replay { start, len } = tamper
            && end >= start + len
            && !replay.is_empty()
        {
            to.write_all(&replay).await?;
            replay.clear();
        }
        to.flush().await?;
        offset = end;
    }
}

async fn forward_frames<R, W>(mut from: R, mut to: W, replay: usize) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut total = 0u64;
    let mut frame = Vec::with_capacity(2 + u16::MAX as usize);
    for index in 0.. {
        let mut len = [0u8; 2];
        if from.read_exact(&mut len).await.is_err() {
            let _ = to.shutdown().await;
            return Ok(total);
        }
        let body_len = u16::from_be_bytes(len) as usize;
        frame.clear();
        frame.extend_from_slice(&len);
        frame.resize(2 + body_len, 0);
        from.read_exact(&mut frame[2..]).await?;
        to.write_all(&frame).await?;
        if index == replay {
            to.write_all(&frame).await?;
        }
        to.flush().await?;
        total += frame.len() as u64;
    }
    Ok(total)
}

/// Joins `a` and `b` through the proxy: bytes from `a` to `b` get
/// `a_to_b`, bytes from `b` to `a` get `b_to_a`. Ends when both directions end.
pub async fn run<A, B>(a: A, b: B, a_to_b: Tamper, b_to_a: Tamper)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let _ = tokio::join!(forward(ar, bw, a_to_b), forward(br, aw, b_to_a));
}
