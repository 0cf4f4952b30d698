#!/usr/bin/env python3
"""Writes the hand-made seed inputs of every fuzz target into fuzz/corpus/.

Seeds are small, well-formed inputs that get a fuzzer past the first checks
quickly; the corpus replay test (fuzz/tests/replay_corpus.rs) also
runs them in CI. Run from anywhere: python3 fuzz/make_seeds.py

The im_messages seeds are not here: they hold real encrypted envelopes, so
a Rust test writes them (fuzz/tests/im_messages.rs, run with --ignored).
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
# protocol_messages: selector byte, then a message; the documented vectors
# of PROTOCOL.md sections 6.4 and 7.
H = bytes.fromhex
record = H("0801" "1220" "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
           "1880d095ffbc31" "2217" "2f6970342f3132372e302e302e312f7463702f34303031")
signature = H("8cd1b4050d69acc9de648a53e361d75cca47fc3de042a821c1e798eff3af4947"
              "ba85e31faabe1727a59566b701d7d3a4bd23670bd9df8c83cc82379b19721b03")
envelope = (H("0801" "1220" "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c")
            + H("1a44") + record + H("2240") + signature)
identify_body = (H("0a0b") + b"shoal/0.1.0" + H("1217") + b"/ip4/127.0.0.1/tcp/4001"
                 + H("1a0b") + b"/shoal/ping" + H("2216") + b"/ip4/10.0.0.2/tcp/5000"
                 + H("2aac01") + envelope)
identify = H("0afa01") + identify_body
write("protocol_messages", "negotiation_propose_accept",
      b"\x00" + H("16080112120a0b2f73686f616c2f70696e67120301020a") + H("0608011a02080a"))
write("protocol_messages", "negotiation_refuse", b"\x00" + H("06080122020801"))
write("protocol_messages", "ping", b"\x01" + H("0a09090807060504030201"))
write("protocol_messages", "pong", b"\x01" + H("1209090807060504030201"))
write("protocol_messages", "identify", b"\x02" + identify)
write("protocol_messages", "discovery_get_peers", b"\x03" + H("0a020810"))
write("protocol_messages", "discovery_peers", b"\x03" + H("12af01") + H("0aac01") + envelope)
write("protocol_messages", "signed_record", b"\x04" + envelope)
write("protocol_messages", "peer_record", b"\x05" + record)

# routing_messages: selector byte, then (for the live cores) frames with a
# two-byte length prefix; the documented vectors of PROTOCOL.md sections 8
# and 9.
def frames(*fs):
    return b"".join(struct.pack(">H", len(f)) + f for f in fs)


K = bytes([0xab]) * 32
P = H("0a20") + bytes([1]) * 32 + H("1217") + b"/ip4/127.0.0.1/tcp/4001"
RID = H("090807060504030201")
kad_record = (H("0801") + H("1220") + K + H("1a04") + b"test" + H("2205") + b"hello"
              + H("2a20" "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c")
              + H("3007") + H("3890fecfaa06"))
kad_signature = H("e4f9be396d50970e92867ba19dc46d6722dbea7e77ed0e81aef22bea187981a3"
                  "a9665f2bfade45c4bfe81ba8222f9b58f5c22ccd3ac0c1cef894e98a86763204")
kad_envelope = H("0a5b") + kad_record + H("1240") + kad_signature
write("routing_messages", "kad_requests", b"\x00" + frames(
    RID + H("1200"),
    RID + H("2222" "0a20") + K,
    RID + H("3222" "0a20") + K,
    RID + H("42a201" "0a9f01") + kad_envelope,
))
write("routing_messages", "kad_answers", b"\x00" + frames(
    RID + H("1a00"),
    RID + H("2a3d" "0a3b") + P,
    RID + H("3a3d" "123b") + P,
    RID + H("4a02" "0801"),
))
write("routing_messages", "kad_signed_record", b"\x01" + kad_envelope)
gossip_body = (H("0801") + H("1220" "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c")
               + H("1801") + H("2204") + b"chat" + H("2a05") + b"hello")
gossip_signature = H("b03214436d3b90833165ea6daf48f8bdd8b5f05f791b6101f0c30f81f87f61c1"
                     "024d3f9d2cd8d1072e44f6e7d59ba03e0c51a0440610a3da847e1b77a7a46906")
gossip_id = H("a4c95084ce476c373966c84779f454ab23861d3df93ef9e077b38e594741dab5")
gossip_subscribe = H("0a0a0a080801120463686174")
gossip_message = H("0a79" "1277" "0a33") + gossip_body + H("1240") + gossip_signature
gossip_control = (H("0a60" "1a28" "0a0463686174" "1220") + gossip_id + H("2222" "0a20") + gossip_id
                  + H("2a06" "0a0463686174") + H("3208" "0a0463686174" "103c"))
write("routing_messages", "gossip_session", b"\x02" + frames(gossip_subscribe, gossip_message, gossip_control))
write("routing_messages", "gossip_frame_message", b"\x03" + gossip_message)
write("routing_messages", "gossip_frame_control", b"\x03" + gossip_control)

# relay_messages: the vectors of PROTOCOL.md section 13 (payloads without
# their length prefix for the decoders, framed for the reader), and a
# ledger script that reserves, opens circuits, closes and lets time pass.
relay_peer = H("11" * 32)
relay_status_ok = H("1a0d10901c1a08088080800210880e")
write("relay_messages", "hop_reserve", b"\x00" + H("0a00"))
write("relay_messages", "hop_connect", b"\x00" + H("12220a20") + relay_peer)
write("relay_messages", "hop_status", b"\x00" + relay_status_ok)
write("relay_messages", "stop_incoming", b"\x01" + H("0a2c0a20") + relay_peer + H("1208088080800210880e"))
write("relay_messages", "stop_status", b"\x01" + H("12020801"))
write("relay_messages", "hop_stream", b"\x02" + H("000000020a00") + H("0000000f") + relay_status_ok + b"after")
write("relay_messages", "ledger_script", b"\x03" + bytes([
    0, 1, 1,  0, 2, 1,  0, 3, 2,  2, 4, 1,  2, 5, 2,  3, 0, 0,  4, 61, 0,  0, 1, 1,  1, 0, 0,
]))

# reach_messages: the vectors of PROTOCOL.md section 14, alone and as
# frames from a checker (a check of the checker's own address, which a
# core asks back about; a result for an unknown nonce).
reach_check = H("0a25090807060504030201121a") + b"/ip4/198.51.100.7/tcp/4001"
reach_result = H("120b09080706050403020110" "01")
write("reach_messages", "check", b"\x00" + reach_check)
write("reach_messages", "result", b"\x00" + reach_result)
write("reach_messages", "core_frames", b"\x01" + frames(reach_check, reach_result))
print("seeds written to", ROOT)
