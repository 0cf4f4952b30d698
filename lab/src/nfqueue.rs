//! A minimal NFQUEUE client: just what the shaper needs, over a plain
//! netlink socket.
//!
//! Why not the `nfq` crate: it hides its socket, so a caller holding packets
//! cannot wait for "the next packet or the next release time, whichever comes
//! first"; it would have to spin or wake on a timer. Owning the socket lets
//! the shaper `ppoll` with a nanosecond timeout. The protocol subset is small
//! (see `include/uapi/linux/netfilter/nfnetlink_queue.h`):
//!
//! ```text
//! every message:  nlmsghdr (16 bytes, host order) | nfgenmsg (4) | attributes
//! nlmsghdr:       len u32 | type u16 | flags u16 | seq u32 | portid u32
//! nfgenmsg:       family u8 | version u8 | queue number be16
//! attribute:      len u16 | type u16 | payload, padded to 4 bytes
//! ```
//!
//! We send CONFIG messages (bind, copy mode, queue length, flags) and
//! VERDICT messages, and read PACKET messages (only the packet id matters:
//! we ask for metadata only, never payload) and errors/acks.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, recv, send, setsockopt, socket,
    sockopt,
};
use nix::sys::time::TimeSpec;

const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
/// Take GSO packets whole instead of having the kernel segment them first:
/// far fewer packets to handle in a bulk transfer. Safe because we never
/// look at or change payloads.
const NFQA_CFG_F_GSO: u32 = 4;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
/// Attribute type bits; the top two are flags.
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSG_HDR_LEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
/// How long the kernel may take to acknowledge a configuration message.
const CONFIG_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of one `recv`. Metadata-only packet messages are ~100-200 bytes,
/// so one read brings many.
const RECV_BUFFER: usize = 64 * 1024;
/// The socket's receive buffer, set past `rmem_max` (we are root): packets
/// wait here between the kernel queueing them and us reading them; if it
/// overflows the kernel drops the packet.
const SOCKET_RCVBUF: usize = 8 * 1024 * 1024;

/// What to do with a queued packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Accept,
    Drop,
}

/// Something read from the queue socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A queued packet awaiting a verdict.
    Packet(u32),
    /// A positive acknowledgement.
    Ack,
    /// An error reply (errno).
    Error(i32),
}

/// One NFQUEUE queue bound to this socket, in the namespace the socket was
/// created in.
pub(crate) struct Queue {
    fd: OwnedFd,
    num: u16,
    seq: u32,
    tx: Vec<u8>,
    rx: Vec<u8>,
}

impl Queue {
    /// Binds queue `num` (metadata only, whole GSO packets, at most
    /// `max_len` packets waiting for a verdict in the kernel).
    pub(crate) fn bind(num: u16, max_len: u32) -> io::Result<Queue> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )?;
        // Best effort: without it the default buffer still works at low rates.
        let _ = setsockopt(&fd, sockopt::RcvBufForce, &SOCKET_RCVBUF);
        let mut queue = Queue {
            fd,
            num,
            seq: 0,
            tx: Vec::with_capacity(64),
            rx: vec![0; RECV_BUFFER],
        };
        let bind_cmd = [NFQNL_CFG_CMD_BIND, 0, 0, 0]; // command, pad, pf (be16, unused)
        queue.configure(NFQA_CFG_CMD, &bind_cmd)?;
        let mut params = [0u8; 5]; // copy_range be32 (0: no payload), copy_mode
        params[4] = NFQNL_COPY_META;
        queue.configure(NFQA_CFG_PARAMS, &params)?;
        queue.configure(NFQA_CFG_QUEUE_MAXLEN, &max_len.to_be_bytes())?;
        queue.start(NFQNL_MSG_CONFIG, NLM_F_ACK);
        queue.attr(NFQA_CFG_FLAGS, &NFQA_CFG_F_GSO.to_be_bytes());
        queue.attr(NFQA_CFG_MASK, &NFQA_CFG_F_GSO.to_be_bytes());
        queue.send_and_ack()?;
        Ok(queue)
    }

    /// Waits up to `timeout` for the socket to become readable. Returns
    /// false on timeout (or a signal).
    pub(crate) fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        match ppoll(&mut fds, Some(TimeSpec::from_duration(timeout)), None) {
            Ok(n) => Ok(n > 0),
            Err(Errno::EINTR) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// Reads what is waiting without blocking, appending events to `out`.
    /// Returns false when nothing was waiting.
    ///
    /// `ENOBUFS` (our receive buffer overflowed, the kernel dropped packets)
    /// is reported as an error so the caller can count it and go on.
    pub(crate) fn read(&mut self, out: &mut Vec<Event>) -> io::Result<bool> {
        match recv(self.fd.as_raw_fd(), &mut self.rx, MsgFlags::MSG_DONTWAIT) {
            Ok(len) => {
                parse(self.rx.get(..len).unwrap_or_default(), out);
                Ok(true)
            }
            Err(Errno::EAGAIN) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// Issues a verdict for packet `id`. No acknowledgement is requested;
    /// the kernel reports a failed verdict as an [`Event::Error`].
    pub(crate) fn verdict(&mut self, id: u32, verdict: Verdict) -> io::Result<()> {
        let code = match verdict {
            Verdict::Accept => NF_ACCEPT,
            Verdict::Drop => NF_DROP,
        };
        let mut header = [0u8; 8];
        header[..4].copy_from_slice(&code.to_be_bytes());
        header[4..].copy_from_slice(&id.to_be_bytes());
        self.start(NFQNL_MSG_VERDICT, 0);
        self.attr(NFQA_VERDICT_HDR, &header);
        self.send()
    }

    fn configure(&mut self, attr: u16, payload: &[u8]) -> io::Result<()> {
        self.start(NFQNL_MSG_CONFIG, NLM_F_ACK);
        self.attr(attr, payload);
        self.send_and_ack()
    }

    /// Starts a message in `tx`: header with the length left to `send`.
    fn start(&mut self, msg: u16, flags: u16) {
        self.seq = self.seq.wrapping_add(1);
        self.tx.clear();
        self.tx.extend_from_slice(&0u32.to_ne_bytes());
        self.tx
            .extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | msg).to_ne_bytes());
        self.tx
            .extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        self.tx.extend_from_slice(&self.seq.to_ne_bytes());
        self.tx.extend_from_slice(&0u32.to_ne_bytes()); // portid: the kernel
        self.tx.extend_from_slice(&[0, 0]); // AF_UNSPEC, NFNETLINK_V0
        self.tx.extend_from_slice(&self.num.to_be_bytes());
    }

    fn attr(&mut self, ty: u16, payload: &[u8]) {
        let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
        self.tx.extend_from_slice(&len.to_ne_bytes());
        self.tx.extend_from_slice(&ty.to_ne_bytes());
        self.tx.extend_from_slice(payload);
        self.tx.resize(align(self.tx.len()), 0);
    }

    fn send(&mut self) -> io::Result<()> {
        let len = u32::try_from(self.tx.len()).unwrap_or(u32::MAX);
        self.tx[..4].copy_from_slice(&len.to_ne_bytes());
        send(self.fd.as_raw_fd(), &self.tx, MsgFlags::empty())?;
        Ok(())
    }

    fn send_and_ack(&mut self) -> io::Result<()> {
        self.send()?;
        let deadline = Instant::now() + CONFIG_ACK_TIMEOUT;
        let mut events = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no acknowledgement from the kernel",
                ));
            }
            if self.wait(left)? && self.read(&mut events)? {
                for event in events.drain(..) {
                    match event {
                        Event::Ack => return Ok(()),
                        Event::Error(errno) => return Err(io::Error::from_raw_os_error(errno)),
                        Event::Packet(_) => {}
                    }
                }
            }
        }
    }
}

const fn align(len: usize) -> usize {
    (len + 3) & !3
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

/// Splits one `recv` worth of netlink messages into events. Stops at the
/// first malformed length; messages of other types are skipped.
pub(crate) fn parse(buf: &[u8], out: &mut Vec<Event>) {
    let mut at = 0;
    while let (Some(len), Some(ty)) = (u32_at(buf, at), u16_at(buf, at + 4)) {
        let len = len as usize;
        if len < NLMSG_HDR_LEN || at + len > buf.len() {
            break;
        }
        let body = &buf[at + NLMSG_HDR_LEN..at + len];
        if ty == NLMSG_ERROR {
            match u32_at(body, 0).map(|e| e as i32) {
                Some(0) => out.push(Event::Ack),
                Some(errno) => out.push(Event::Error(-errno)),
                None => {}
            }
        } else if ty == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET
            && let Some(id) = packet_id(body.get(NFGENMSG_LEN..).unwrap_or_default())
        {
            out.push(Event::Packet(id));
        }
        at += align(len);
    }
}

/// The packet id in a PACKET message's attributes.
fn packet_id(attrs: &[u8]) -> Option<u32> {
    let mut at = 0;
    while let (Some(len), Some(ty)) = (u16_at(attrs, at), u16_at(attrs, at + 2)) {
        let len = usize::from(len);
        if len < 4 {
            return None;
        }
        if ty & NLA_TYPE_MASK == NFQA_PACKET_HDR {
            let id = attrs.get(at + 4..at + 8)?;
            return Some(u32::from_be_bytes(id.try_into().ok()?));
        }
        at += align(len);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(ty: u16, body: &[u8]) -> Vec<u8> {
        let mut msg = Vec::new();
        let len = (NLMSG_HDR_LEN + body.len()) as u32;
        msg.extend_from_slice(&len.to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&[0; 10]);
        msg.extend_from_slice(body);
        msg.resize(align(msg.len()), 0);
        msg
    }

    #[test]
    fn parses_packets_acks_and_errors() {
        // nfgenmsg, then a mark attribute (skipped), then the packet header.
        let mut packet = vec![0, 0, 0, 0];
        packet.extend_from_slice(&8u16.to_ne_bytes());
        packet.extend_from_slice(&3u16.to_ne_bytes());
        packet.extend_from_slice(&[0; 4]);
        packet.extend_from_slice(&11u16.to_ne_bytes());
        packet.extend_from_slice(&(NFQA_PACKET_HDR | 0x4000).to_ne_bytes());
        packet.extend_from_slice(&0x0102_0304u32.to_be_bytes());
        packet.extend_from_slice(&[8, 0, 1]);
        let mut buf = message((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET, &packet);
        buf.extend(message(NLMSG_ERROR, &0i32.to_ne_bytes()));
        buf.extend(message(NLMSG_ERROR, &(-1i32).to_ne_bytes()));
        buf.extend(message(99, &[1, 2, 3]));
        let mut events = Vec::new();
        parse(&buf, &mut events);
        assert_eq!(
            events,
            [Event::Packet(0x0102_0304), Event::Ack, Event::Error(1)]
        );
    }

    #[test]
    fn truncated_input_is_ignored() {
        let buf = message(NLMSG_ERROR, &0i32.to_ne_bytes());
        let mut events = Vec::new();
        for cut in 0..buf.len() {
            parse(&buf[..cut], &mut events);
        }
        parse(&[0xff; 40], &mut events);
        assert!(events.is_empty());
    }
}
