#!/usr/bin/env python3
"""Regenerate the seed corpus of the fuzz_frame target (tests/fuzz/corpus/frame/).

Deterministic, no dependencies (a minimal msgpack encoder is inlined, so the
hostile frames are spelled out byte by byte exactly as in tests/unit/test_codec.c).
Usage: python3 tools/gen-fuzz-corpus.py [outdir]
Existing seeds with other names (e.g. crashes found by the fuzzer, kept as
regressions) are left alone.
"""
import os
import struct
import sys


def pack(o):
    """Minimal msgpack encoder: None, bool, int, float, str, bytes, list, dict."""
    if o is None:
        return b"\xc0"
    if o is True:
        return b"\xc3"
    if o is False:
        return b"\xc2"
    if isinstance(o, int):
        if 0 <= o <= 0x7F:
            return bytes([o])
        if -32 <= o < 0:
            return struct.pack(">b", o)
        if o >= 0:
            for fmt, code, lim in ((">B", 0xCC, 0xFF), (">H", 0xCD, 0xFFFF), (">I", 0xCE, 0xFFFFFFFF)):
                if o <= lim:
                    return bytes([code]) + struct.pack(fmt, o)
            return b"\xcf" + struct.pack(">Q", o)
        for fmt, code, lo in ((">b", 0xD0, -0x80), (">h", 0xD1, -0x8000), (">i", 0xD2, -0x80000000)):
            if o >= lo:
                return bytes([code]) + struct.pack(fmt, o)
        return b"\xd3" + struct.pack(">q", o)
    if isinstance(o, float):
        return b"\xcb" + struct.pack(">d", o)
    if isinstance(o, str):
        b = o.encode()
        n = len(b)
        if n < 32:
            return bytes([0xA0 | n]) + b
        if n <= 0xFF:
            return b"\xd9" + bytes([n]) + b
        if n <= 0xFFFF:
            return b"\xda" + struct.pack(">H", n) + b
        return b"\xdb" + struct.pack(">I", n) + b
    if isinstance(o, (bytes, bytearray)):
        n = len(o)
        if n <= 0xFF:
            return b"\xc4" + bytes([n]) + bytes(o)
        return b"\xc5" + struct.pack(">H", n) + bytes(o)
    if isinstance(o, list):
        n = len(o)
        head = bytes([0x90 | n]) if n < 16 else b"\xdc" + struct.pack(">H", n)
        return head + b"".join(pack(x) for x in o)
    if isinstance(o, dict):
        n = len(o)
        head = bytes([0x80 | n]) if n < 16 else b"\xde" + struct.pack(">H", n)
        return head + b"".join(pack(k) + pack(v) for k, v in o.items())
    raise TypeError(type(o))


def req(id_, op, path, body=None, q=None):
    d = {"id": id_, "op": op, "path": path}
    if body is not None:
        d["body"] = body
    if q is not None:
        d["q"] = q
    return pack(d)


def nest(n):
    """n nested lists, the innermost empty."""
    o = []
    for _ in range(n - 1):
        o = [o]
    return o


UUID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4IiwidGlkIjoieSJ9.c2ln"


def seeds():
    s = {}
    # ---- valid requests, every op
    s["valid-session"] = req(1, "POST", "/v1/session",
                             {"token": TOKEN, "client": {"name": "pwa", "version": "1.2.3"}})
    s["valid-get-conversations"] = req(2, "GET", "/v1/conversations")
    s["valid-get-messages-q"] = req(3, "GET", "/v1/conversations/%s/messages" % UUID,
                                    q={"before": 100, "limit": 50})
    s["valid-post-message"] = req(4, "POST", "/v1/conversations/%s/messages" % UUID,
                                  {"client_msg_id": UUID, "text": "hello \u2764",
                                   "attachments": [{"url": "https://x/y.png", "mime": "image/png",
                                                    "size": 12345, "name": "y.png"}]})
    s["valid-patch-message"] = req(5, "PATCH", "/v1/conversations/%s/messages/17" % UUID, {"text": "edit"})
    s["valid-delete-message"] = req(6, "DELETE", "/v1/conversations/%s/messages/17" % UUID)
    s["valid-put-presence"] = req(7, "PUT", "/v1/presence", {"status": "away", "note": None})
    s["valid-subscribe-since"] = req(8, "POST", "/v1/subscriptions", {"channel": "conv:" + UUID, "since": 41})
    s["valid-unsubscribe"] = req(9, "DELETE", "/v1/subscriptions/studio")
    s["valid-typing-bool"] = req(10, "POST", "/v1/conversations/%s/typing" % UUID, {"state": True})
    s["valid-ar-events"] = req(11, "POST", "/v1/ar-sessions/%s/events" % UUID,
                               {"events": [{"t": i * 16, "type": "pose", "v": {"x": 0.5, "y": -1.25}}
                                           for i in range(5)]})
    s["valid-signal-candidate"] = req(12, "POST", "/v1/consults/%s/signal" % UUID,
                                      {"to": UUID, "kind": "candidate",
                                       "candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host",
                                                     "sdpMid": "0", "sdpMLineIndex": 0}})
    s["valid-appointment-negative"] = req(13, "POST", "/v1/appointments",
                                          {"start": 1700000000000, "end": 1700003600000,
                                           "deposit_cents": -1, "version": 2 ** 63})
    s["valid-id-max-u64"] = req(2 ** 64 - 1, "GET", "/v1/presence")
    s["valid-nil-body-q"] = b"\x85" + pack("id") + pack(14) + pack("op") + pack("GET") + \
        pack("path") + pack("/v1/presence") + pack("body") + b"\xc0" + pack("q") + b"\xc0"
    s["valid-unknown-keys"] = b"\x86" + pack("v") + pack(2) + pack("id") + pack(15) + \
        pack(1) + pack("int key") + pack("op") + pack("GET") + pack("path") + pack("/v1/x") + \
        b"\xc4\x02id" + pack(99)
    s["valid-every-format"] = (
        b"\x84" + pack("id") + b"\x01" + pack("op") + pack("POST") + pack("path") + pack("/v1/x") +
        pack("body") + b"\x81\xa1b\xdc\x00\x14" +
        b"\xca\x3f\x80\x00\x00" + b"\xcb" + struct.pack(">d", 2.5) +
        b"\xd4\x01\xaa" + b"\xd5\x01\x01\x02" + b"\xd6\x01" + b"abcd" + b"\xd7\x01" + b"abcdefgh" +
        b"\xd8\x01" + b"0123456789abcdef" + b"\xc7\x03\x05xyz" + b"\xc8\x00\x02\x05xy" +
        b"\xc9\x00\x00\x00\x01\x05x" + b"\xc7\x00\x05" + b"\xc6\x00\x00\x00\x01z" +
        b"\xdb\x00\x00\x00\x01s" + b"\xdd\x00\x00\x00\x01\x01" + b"\xdf\x00\x00\x00\x01\x01\x02" +
        b"\xd3" + struct.pack(">q", -2 ** 63) + b"\xcf" + struct.pack(">Q", 2 ** 64 - 1) +
        b"\xd1\x80\x00" + b"\xe0" + b"\x90")
    s["valid-depth-8"] = req(16, "POST", "/v1/x", {"k": nest(6)})  # body is depth 2: 8
    s["valid-path-max-len"] = req(17, "GET", "/" + "a" * 255)
    s["valid-str-max"] = req(18, "POST", "/v1/x", {"text": "x" * 16384})

    # ---- ill-formed requests (well-formed maps)
    s["badreq-empty-map"] = b"\x80"
    s["badreq-no-id"] = pack({"op": "GET", "path": "/v1/x"})
    s["badreq-negative-id"] = pack({"id": -1, "op": "GET", "path": "/v1/x"})
    s["badreq-str-id"] = pack({"id": "1", "op": "GET", "path": "/v1/x"})
    s["badreq-lower-op"] = req(20, "get", "/v1/x")
    s["badreq-head-op"] = req(21, "HEAD", "/v1/x")
    s["badreq-relative-path"] = req(22, "GET", "v1/x")
    s["badreq-dotdot"] = req(23, "GET", "/v1/../admin")
    s["badreq-double-slash"] = req(24, "GET", "/v1//x")
    s["badreq-query-in-path"] = req(25, "GET", "/v1/x?a=1")
    s["badreq-nul-in-path"] = req(26, "GET", "/v1\x00/x")
    s["badreq-path-too-long"] = req(27, "GET", "/" + "a" * 256)
    s["badreq-body-array"] = req(28, "POST", "/v1/x", [1, 2])
    s["badreq-q-str"] = b"\x84" + pack("id") + pack(29) + pack("op") + pack("GET") + \
        pack("path") + pack("/v1/x") + pack("q") + pack("a=1")
    s["badreq-dup-id"] = b"\x84" + pack("id") + pack(1) + pack("op") + pack("GET") + \
        pack("path") + pack("/v1/x") + pack("id") + pack(2)
    s["badreq-bin-path"] = b"\x83" + pack("id") + pack(1) + pack("op") + pack("GET") + \
        pack("path") + b"\xc4\x03/v1"

    # ---- hostile frames
    valid = s["valid-post-message"]
    s["hostile-empty"] = b""
    s["hostile-text-json"] = b'{"id":1,"op":"GET","path":"/v1/x"}'
    s["hostile-array-top"] = pack([1, 2, 3])
    s["hostile-int-top"] = b"\x05"
    s["hostile-str-top"] = pack("GET")
    s["hostile-two-maps"] = s["valid-get-conversations"] * 2
    s["hostile-trailing-byte"] = s["valid-get-conversations"] + b"\x00"
    s["hostile-truncated-half"] = valid[: len(valid) // 2]
    s["hostile-truncated-last"] = valid[:-1]
    s["hostile-map32-huge"] = b"\xdf\xff\xff\xff\xff"
    s["hostile-map16-keys"] = b"\xde\x00\x03\x01\x02\x03\x04"
    s["hostile-array32-huge"] = b"\x81\xa1a\xdd\xff\xff\xff\xff\x00"
    s["hostile-str32-huge"] = b"\x81\xa1a\xdb\xff\xff\xff\xff" + b"x"
    s["hostile-bin32-huge"] = b"\x81\xa1a\xc6\xff\xff\xff\xff" + b"x"
    s["hostile-ext32-huge"] = b"\x81\xa1a\xc9\xff\xff\xff\xff\x01"
    s["hostile-nested-claims"] = b"\x81\xa1a\x9f" + b"\x91" * 7 + b"\x90" + bytes(range(1, 8))
    s["hostile-depth-9"] = req(30, "POST", "/v1/x", {"k": nest(7)})  # depth 9
    s["hostile-depth-40"] = b"\x81\xa1a" + b"\x91" * 39 + b"\x90"
    s["hostile-c1-value"] = b"\x81\xa1a\xc1"
    s["hostile-c1-top"] = b"\xc1"
    s["hostile-str-too-large"] = req(31, "POST", "/v1/x", {"text": "x" * 16385})
    s["hostile-frame-too-large"] = b"\x81\xa1s\xdb" + struct.pack(">I", 65536) + b"y" * 65536
    return s


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "tests", "fuzz", "corpus", "frame")
    os.makedirs(out, exist_ok=True)
    s = seeds()
    for name in sorted(s):
        with open(os.path.join(out, name + ".mp"), "wb") as f:
            f.write(s[name])
    print("%d seeds written to %s" % (len(s), os.path.normpath(out)))


if __name__ == "__main__":
    main()
