#!/usr/bin/env python3
"""Writes an N-entry double-hashed IPIP-383 denylist (the Bad Bits format) for load tests.

Each generated line is `//` + hex sha2-256 of `{CIDv1 base32}/`, the legacy anchor of a CID
root. The i-th CID is the raw CIDv1 of sha2-256(i as 8 little-endian bytes), the same
sequence as `benches/denylist.rs`, so the output is deterministic and matches no real content
unless asked to: `--block CID[/path]` (repeatable) adds the anchor of that CID (or path),
CIDv0 or base32 CIDv1, after the generated lines.

    python3 loadtest/lib/gen_denylist.py 1000000 /tmp/1m.deny
    python3 loadtest/lib/gen_denylist.py 10 /tmp/small.deny --block bafy.../index.html
"""

import argparse
import base64
import hashlib
import struct

B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
RAW, DAG_PB, SHA2_256 = 0x55, 0x70, 0x12


def b32(data: bytes) -> str:
    return base64.b32encode(data).decode().lower().rstrip("=")


def b58decode(s: str) -> bytes:
    n = 0
    for ch in s:
        n = n * 58 + B58.index(ch)
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return b"\0" * (len(s) - len(s.lstrip("1"))) + body


def cidv1_base32(cid: str) -> str:
    """The `b…` CIDv1 form the legacy anchors hash (a CIDv0 becomes dag-pb CIDv1)."""
    if cid.startswith("Qm") and len(cid) == 46:
        return "b" + b32(bytes([1, DAG_PB]) + b58decode(cid))
    if cid.startswith("b"):
        return cid.lower()
    raise SystemExit(f"--block: {cid!r}: give a CIDv0 (Qm…) or a base32 CIDv1 (b…)")


def anchor(text: str) -> str:
    return "//" + hashlib.sha256(text.encode()).hexdigest() + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("n", type=int, help="generated entries")
    ap.add_argument("out", help="the .deny file to write")
    ap.add_argument("--block", action="append", default=[], metavar="CID[/path]")
    ap.add_argument("--status", default="410", choices=["410", "451"])
    args = ap.parse_args()

    prefix = bytes([1, RAW, SHA2_256, 32])
    with open(args.out, "w") as f:
        f.write(
            "version: 1\nname: generated load-test list\n"
            f"hints:\n  gateway_status: {args.status}\n---\n"
        )
        lines = []
        for i in range(args.n):
            digest = hashlib.sha256(struct.pack("<Q", i)).digest()
            lines.append(anchor("b" + b32(prefix + digest) + "/"))
            if len(lines) == 65536:
                f.writelines(lines)
                lines.clear()
        f.writelines(lines)
        for item in args.block:
            cid, _, path = item.strip("/").partition("/")
            f.write(anchor(cidv1_base32(cid) + "/" + path.strip("/")))


if __name__ == "__main__":
    main()
