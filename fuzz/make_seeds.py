#!/usr/bin/env python3
"""Writes the hand-made seed inputs of every fuzz target into fuzz/corpus/.

Seeds are small, well-formed inputs that get a fuzzer past the first checks
quickly; the corpus replay test (fuzz/tests/replay_corpus.rs) also
runs them in CI. Run from anywhere: python3 fuzz/make_seeds.py
"""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

DATA, WINDOW_UPDATE, PING, GO_AWAY = 0, 1, 2, 3
SYN, ACK, FIN, RST = 1, 2, 4, 8


def header(kind, flags, stream, length, version=0):
    return struct.pack(">BBHII", version, kind, flags, stream, length)


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# yamux_frame: one header each.
write("yamux_frame", "data_syn", header(DATA, SYN, 1, 5) + b"hello")
write("yamux_frame", "window_update_ack", header(WINDOW_UPDATE, ACK, 2, 262144))
write("yamux_frame", "ping", header(PING, SYN, 0, 0xDEADBEEF))
write("yamux_frame", "go_away", header(GO_AWAY, 0, 0, 1))
write("yamux_frame", "bad_version", header(DATA, 0, 1, 0, version=1))
write("yamux_frame", "bad_type", header(9, 0, 1, 0))
write("yamux_frame", "huge_length", header(DATA, 0, 1, 0xFFFFFFFF))
write("yamux_frame", "short", b"\x00\x00\x00")

# yamux_session: control byte (bit 0: 1 = we are the server, so the remote
# opens odd ids; the rest sets the chunk size), then the remote's bytes.
stream = (
    header(WINDOW_UPDATE, SYN, 1, 0)
    + header(DATA, 0, 1, 5) + b"hello"
    + header(PING, SYN, 0, 7)
    + header(DATA, FIN, 1, 3) + b"bye"
    + header(WINDOW_UPDATE, SYN, 3, 1 << 20)
    + header(DATA, RST, 3, 0)
    + header(GO_AWAY, 0, 0, 0)
)
write("yamux_session", "server_streams", bytes([0x01]) + stream)
write("yamux_session", "server_streams_bytewise", bytes([0x00 | 0x01]) + stream)
write("yamux_session", "server_big_chunks", bytes([0xFF]) + stream)
write("yamux_session", "client_even_ids",
      bytes([0x10]) + header(DATA, SYN, 2, 4) + b"abcd" + header(DATA, ACK, 1, 0))
write("yamux_session", "window_overrun",
      bytes([0x41]) + header(DATA, SYN, 1, 262145) + b"\x00" * 1024)
write("yamux_session", "ping_storm", bytes([0x21]) + header(PING, SYN, 0, 1) * 64)
write("yamux_session", "wrong_parity", bytes([0x01]) + header(DATA, SYN, 2, 0))

# secio_handshake: role byte (even: responder, odd: initiator), then
# messages, each a one-byte length and that many bytes.
def msg(body):
    assert len(body) < 256
    return bytes([len(body)]) + body

hello_chacha = bytes([1, 1]) + bytes(range(32))
hello_aes = bytes([1, 2]) + bytes(range(32, 64))
write("secio_handshake", "responder_hello_chacha", b"\x00" + msg(hello_chacha))
write("secio_handshake", "responder_hello_aes", b"\x00" + msg(hello_aes))
write("secio_handshake", "responder_unknown_suite",
      b"\x00" + msg(bytes([1, 9]) + bytes(32)) + msg(hello_chacha))
write("secio_handshake", "responder_bad_version", b"\x00" + msg(bytes([7, 1]) + bytes(32)))
write("secio_handshake", "responder_hello_then_junk",
      b"\x00" + msg(hello_chacha) + msg(bytes(range(200))))
write("secio_handshake", "initiator_refused", b"\x01" + msg(bytes([1, 2, 2, 1])))
write("secio_handshake", "initiator_version_refused", b"\x01" + msg(bytes([2, 1, 1])))
write("secio_handshake", "initiator_accept_junk", b"\x01" + msg(bytes([0]) + bytes(range(180))))
write("secio_handshake", "empty", b"")

# secio_frame: length-prefixed frames arriving after a handshake.
def frame(body):
    return struct.pack(">H", len(body)) + body

write("secio_frame", "one_frame", frame(bytes(64)))
write("secio_frame", "two_frames", frame(bytes(16)) + frame(bytes(range(100))))
write("secio_frame", "too_short", frame(bytes(4)))
write("secio_frame", "max_len_prefix", b"\xff\xff" + bytes(300))
write("secio_frame", "truncated", b"\x00")
print("seeds written to", ROOT)
