//! The tokio driver: runs the sans-IO handshake over an async byte stream.

use shoal_identity::PeerId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{
    Config, HandshakeError, RECEIVE_BUFFER_FLOOR, SecureStream,
    budget::Reservation,
    frame::{FrameDecoder, FrameError, LEN_PREFIX, decode_len, encode_len},
    handshake::{InitiatorHandshake, InitiatorStep, ResponderHandshake, ResponderStep},
};

/// Bytes of a handshake message body read before the buffer grows: our own
/// messages (at most 199 bytes) fit, so an honest handshake reads each in
/// one step; a larger one doubles the buffer as its bytes arrive.
const FIRST_BODY_READ: usize = 256;

/// Messages one side receives in a handshake at most: a refusal, an accept
/// (initiator); two hellos and a final (responder).
const MAX_RECEIVED_MESSAGES: usize = 3;

/// Secures an outbound connection: runs the handshake as initiator.
///
/// With `expected`, fails with [`HandshakeError::PeerIdMismatch`] if the
/// remote is someone else; in that case the final handshake message is never
/// sent, so no application data can flow. The whole handshake runs under
/// [`Config::handshake_timeout`].
pub async fn handshake_outbound<IO>(
    io: IO,
    config: &Config,
    expected: Option<PeerId>,
) -> Result<SecureStream<IO>, HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let limit = config.handshake_timeout();
    tokio::time::timeout(limit, outbound(io, config, expected))
        .await
        .map_err(|_| HandshakeError::Timeout(limit))?
        .inspect_err(|e| tracing::debug!(error = %e, "secio: outbound handshake failed"))
}

/// Secures an inbound connection: runs the handshake as responder, accepting
/// any authenticated peer.
pub async fn handshake_inbound<IO>(
    io: IO,
    config: &Config,
) -> Result<SecureStream<IO>, HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    handshake_inbound_expecting(io, config, None).await
}

/// Like [`handshake_inbound`], failing with
/// [`HandshakeError::PeerIdMismatch`] if `expected` is given and the
/// initiator is someone else.
pub async fn handshake_inbound_expecting<IO>(
    io: IO,
    config: &Config,
    expected: Option<PeerId>,
) -> Result<SecureStream<IO>, HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let limit = config.handshake_timeout();
    tokio::time::timeout(limit, inbound(io, config, expected))
        .await
        .map_err(|_| HandshakeError::Timeout(limit))?
        .inspect_err(|e| tracing::debug!(error = %e, "secio: inbound handshake failed"))
}

async fn outbound<IO>(
    mut io: IO,
    config: &Config,
    expected: Option<PeerId>,
) -> Result<SecureStream<IO>, HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (mut state, hello) = InitiatorHandshake::start(config, expected)?;
    send(&mut io, &hello).await?;
    for _ in 0..MAX_RECEIVED_MESSAGES {
        let body = receive(&mut io, config).await?;
        match state.handle(&body)? {
            InitiatorStep::Send { next, message } => {
                send(&mut io, &message).await?;
                state = next;
            }
            InitiatorStep::Complete { message, outcome } => {
                send(&mut io, &message).await?;
                return Ok(SecureStream::new(io, outcome));
            }
        }
    }
    Err(HandshakeError::ProtocolViolation(
        "too many handshake messages",
    ))
}

async fn inbound<IO>(
    mut io: IO,
    config: &Config,
    expected: Option<PeerId>,
) -> Result<SecureStream<IO>, HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut state = ResponderHandshake::new(config, expected);
    for _ in 0..MAX_RECEIVED_MESSAGES {
        let body = receive(&mut io, config).await?;
        match state.handle(&body)? {
            ResponderStep::Send { next, message } => {
                send(&mut io, &message).await?;
                state = next;
            }
            ResponderStep::Refuse { message, error } => {
                send(&mut io, &message).await?;
                // Best effort: the refusal is what matters.
                let _ = io.shutdown().await;
                return Err(error);
            }
            ResponderStep::Complete(outcome) => return Ok(SecureStream::new(io, outcome)),
        }
    }
    Err(HandshakeError::ProtocolViolation(
        "too many handshake messages",
    ))
}

/// Writes one length-prefixed handshake message and flushes it.
async fn send<IO: AsyncWrite + Unpin>(io: &mut IO, body: &[u8]) -> Result<(), HandshakeError> {
    let prefix = encode_len(body.len()).ok_or(HandshakeError::MessageTooLarge {
        len: body.len(),
        max: u16::MAX.into(),
    })?;
    let mut wire = Vec::with_capacity(LEN_PREFIX + body.len());
    wire.extend_from_slice(&prefix);
    wire.extend_from_slice(body);
    io.write_all(&wire).await?;
    io.flush().await?;
    Ok(())
}

/// Reads one length-prefixed handshake message, checking the declared length
/// before allocating anything for the body. The body buffer then grows with
/// the bytes that arrive (doubling from [`FIRST_BODY_READ`]), not with the
/// declared length; past [`RECEIVE_BUFFER_FLOOR`] the rest of the message is
/// reserved from the receive budget first.
async fn receive<IO: AsyncRead + Unpin>(
    io: &mut IO,
    config: &Config,
) -> Result<Vec<u8>, HandshakeError> {
    let mut prefix = [0u8; LEN_PREFIX];
    io.read_exact(&mut prefix).await?;
    let len = decode_len(&prefix).ok_or(HandshakeError::Malformed("length prefix"))?;
    FrameDecoder::handshake(config.max_handshake_message())
        .check_len(len)
        .map_err(|e| match e {
            FrameError::TooLarge { len, max } => HandshakeError::MessageTooLarge { len, max },
            FrameError::TooShort { .. } => HandshakeError::Malformed("empty handshake message"),
        })?;
    let mut reservation = Reservation::new(config.receive_budget().clone());
    let mut body = Vec::new();
    while body.len() < len {
        let filled = body.len();
        let target = (2 * filled).max(FIRST_BODY_READ).min(len);
        if target > RECEIVE_BUFFER_FLOOR {
            // All of the rest at once, so a wait never holds part of it.
            let rest = len - RECEIVE_BUFFER_FLOOR;
            std::future::poll_fn(|cx| reservation.poll_reserve(cx, rest))
                .await
                .map_err(|_| HandshakeError::ReceiveBudgetExhausted)?;
        }
        body.reserve_exact(target - filled);
        body.resize(target, 0);
        io.read_exact(&mut body[filled..]).await?;
    }
    tracing::trace!(bytes = len, "secio: received handshake message");
    Ok(body)
}
