#!/usr/bin/env python3
"""Writes a CARv1 of random raw blocks (CIDv1, sha2-256) for store measurements.

usage: makecar.py OUT.car TOTAL_BYTES SIZE|mix [SEED] [CIDS.txt]

SIZE is the block size in bytes; `mix` draws sizes log-uniformly from 100 bytes to 2 MiB.
The first block is the CAR's root (a raw block is a complete DAG of its own, so the import
pins it); every block is stored. With CIDS.txt, the blocks' CIDs are written there, one per line.
"""
import math
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fleet import cid_bytes, cid_str, varint  # noqa: E402


def cid_raw(data):
    return cid_bytes(0x55, data)


def main():
    out, total, size = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
    blocks = []
    written = 0
    while written < total:
        if size == "mix":
            n = int(math.exp(rng.uniform(math.log(100), math.log(2 << 20))))
        else:
            n = int(size)
        data = rng.randbytes(n)
        blocks.append(data)
        written += n
    root = cid_raw(blocks[0])
    # dag-cbor {"roots": [CID], "version": 1}; keys in length-first order.
    link = b"\x00" + root
    header = (b"\xa2\x65roots\x81\xd8\x2a\x58" + bytes([len(link)]) + link
              + b"\x67version\x01")
    cids = []
    with open(out, "wb") as f:
        f.write(varint(len(header)) + header)
        for data in blocks:
            c = cid_raw(data)
            cids.append(cid_str(c))
            f.write(varint(len(c) + len(data)) + c + data)
    if len(sys.argv) > 5:
        with open(sys.argv[5], "w") as f:
            f.write("".join(c + "\n" for c in cids))
    print(f"{out}: {len(blocks)} blocks, {written} bytes")


if __name__ == "__main__":
    main()
