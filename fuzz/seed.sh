#!/usr/bin/env bash
# Derives fuzz seeds from the IPFS gateway conformance fixtures, plus hand-written seeds, into
# OUT/<target>/ (default: fuzz/seeds, which is not committed). The committed corpora are these
# seeds minimized with `cargo fuzz cmin` (see fuzz/README.md): the fixtures themselves are never
# copied into the repository.
#
#   fuzz/seed.sh [FIXTURES_DIR] [OUT_DIR]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fixtures="${1:-$here/../../shared/conformance/fixtures}"
out="${2:-$here/seeds}"
[ -d "$fixtures" ] || { echo "no fixtures at $fixtures" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out"
python3 - "$fixtures" "$out" <<'PY'
import hashlib, os, struct, sys

fixtures, out = sys.argv[1], sys.argv[2]
MAX_SEED = 8192


def save(target, data, name=None):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    name = name or hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def uvarint(b, i):
    n = shift = 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return n, i


def put_uvarint(n):
    o = bytearray()
    while True:
        c = n & 0x7F
        n >>= 7
        o.append(c | (0x80 if n else 0))
        if not n:
            return bytes(o)


def read_cid(b, i):
    """Returns (cid_bytes, codec, next_index)."""
    if b[i] == 0x12 and b[i + 1] == 0x20:
        return b[i:i + 34], 0x70, i + 34
    start = i
    _, i = uvarint(b, i)  # version
    codec, i = uvarint(b, i)
    _, i = uvarint(b, i)  # multihash code
    ln, i = uvarint(b, i)
    return b[start:i + ln], codec, i + ln


def read_car(data):
    hlen, i = uvarint(data, 0)
    header = data[i:i + hlen]
    i += hlen
    blocks = []
    while i < len(data):
        ln, j = uvarint(data, i)
        cid, codec, k = read_cid(data, j)
        blocks.append((cid, codec, data[k:j + ln]))
        i = j + ln
    return header, blocks


def header_roots(header):
    # dag-cbor {roots: [tag 42 bytes(0x00 || cid)], version: 1}: pull out each tag-42 CID.
    roots, i = [], 0
    while True:
        i = header.find(b"\xd8\x2a", i)
        if i < 0:
            return roots
        i += 2
        major = header[i]
        if major == 0x58:
            ln, i = header[i + 1], i + 2
        elif major == 0x59:
            ln, i = struct.unpack(">H", header[i + 1:i + 3])[0], i + 3
        else:
            ln, i = major - 0x40, i + 1
        roots.append(header[i + 1:i + ln])
        i += ln


def pb_fields(b):
    """Protobuf wire fields as (number, wire type, value)."""
    i, fields = 0, []
    while i < len(b):
        key, i = uvarint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = uvarint(b, i)
        elif wt == 2:
            ln, i = uvarint(b, i)
            v, i = b[i:i + ln], i + ln
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        else:
            raise ValueError("wire type")
        fields.append((num, wt, v))
    return fields


def dagpb(block):
    """(links as (cid, name), unixfs data fields)."""
    links, data = [], []
    for num, _, v in pb_fields(block):
        if num == 2:
            f = {n: val for n, _, val in pb_fields(v)}
            links.append((f.get(1, b""), f.get(2, b"").decode("utf-8", "replace")))
        elif num == 1:
            data = pb_fields(v)
    return links, data


def unixfs_type(data):
    for num, _, v in data:
        if num == 1:
            return v
    return None


def file_bytes(cid, blocks_by_cid):
    codec_block = blocks_by_cid.get(cid)
    if codec_block is None:
        return None
    codec, block = codec_block
    if codec == 0x55:
        return block
    links, data = dagpb(block)
    out = b"".join(v for n, _, v in data if n == 2)
    for c, _ in links:
        part = file_bytes(c, blocks_by_cid)
        if part is None:
            return None
        out += part
    return out


cars, records = [], []
for root, _, files in os.walk(fixtures):
    for f in sorted(files):
        p = os.path.join(root, f)
        if f.endswith(".car"):
            cars.append(p)
        elif f.endswith(".ipns-record"):
            records.append(p)
cars.sort()
records.sort()

CODEC_SEL = {0x71: 0, 0x0129: 1, 0x51: 2, 0x0200: 3, 0x70: 4, 0x55: 5}
paths_by_car = {}
roots_all = []
for p in cars:
    data = open(p, "rb").read()
    save("car_reader", data[:MAX_SEED])
    try:
        header, blocks = read_car(data)
    except (IndexError, ValueError):
        continue
    roots = header_roots(header)
    roots_all += roots
    by_cid = {c: (codec, b) for c, codec, b in blocks}
    paths = [""]
    for cid, codec, block in blocks:
        if codec in CODEC_SEL:
            save("codec_links", bytes([CODEC_SEL[codec]]) + block[:MAX_SEED])
        if codec != 0x70:
            continue
        try:
            links, ufs = dagpb(block)
        except (IndexError, ValueError):
            continue
        kind = unixfs_type(ufs)
        save("unixfs", b"\x00" + block)
        if kind == 5:  # HAMT shard: also looked up one level down
            save("unixfs", b"\x02" + block)
        if kind in (1, 5):
            for c, name in links:
                if name == "_redirects":
                    text = file_bytes(c, by_cid)
                    if text is not None:
                        save("redirects", text[:MAX_SEED])
                        save("redirects", text[:MAX_SEED] + b"\x00/not-found\n/redirect-one?x=1\n/splat/a/b\n/%2e%2e/x\n")
    # Paths of the root directory (and one level below) for provider stream requests.
    if roots and roots[0] in by_cid and by_cid[roots[0]][0] == 0x70:
        try:
            links, _ = dagpb(by_cid[roots[0]][1])
            for c, name in links[:6]:
                paths.append(name)
                if c in by_cid and by_cid[c][0] == 0x70:
                    sub, _ = dagpb(by_cid[c][1])
                    paths += [name + "/" + n for _, n in sub[:3]]
        except (IndexError, ValueError):
            pass
    if len(data) <= 16384:
        for path in paths[:8]:
            for scope in (0, 1, 2, 0x81 | (2 << 2), 0x41):
                save("provider_stream", b"\x00" + bytes([scope]) + path.encode() + b"\x00" + data)

for p in records:
    data = open(p, "rb").read()
    save("ipns_record", b"\x00" + data)
    name = os.path.basename(p).split(".")[0].split("_")[0]
    save("ipns_record", b"\x01" + name.encode())
    for num, _, v in pb_fields(data):
        if num == 9:
            for flags in (0x00, 0x01, 0x05, 0x24):
                save("ipns_record", b"\x02" + bytes([flags]) + v)

# ---- hand-written seeds ----
def b32(cid):
    import base64
    return "b" + base64.b32encode(cid).decode().lower().rstrip("=")

v1 = [b32(r) for r in roots_all if not (r[0] == 0x12 and r[1] == 0x20)][:4] or [
    "bafkreihhpc5y2pqvl5rbe5uuyhqjouybfs3rvlmisccgzue2kkt5zq6upq"]
cid = v1[0]
heads = [
    f"GET /ipfs/{cid}",
    f"GET /ipfs/{cid}/a/b%20c/?filename=x.bin&download=true\ncache-control: max-age=0, only-if-cached",
    f"GET /ipfs/{cid}?format=car&dag-scope=entity&entity-bytes=0:1000&car-dups=y&car-order=dfs",
    f"GET /ipfs/{cid}?format=car&entity-bytes=-5:-1",
    f"GET /ipfs/{cid}\naccept: application/vnd.ipld.car; version=1; order=dfs; dups=n",
    f"GET /ipfs/{cid}\naccept: text/html,application/xhtml+xml,*/*;q=0.8",
    f"GET /ipfs/{cid}\naccept: application/vnd.ipld.raw;q=0, application/vnd.ipld.foo",
    f"HEAD /ipfs/{cid}?format=dag-json\nif-none-match: \"{cid}\"\nrange: bytes=0-10,20-\nif-range: \"x\"",
    f"GET /ipfs/{cid}/%ff",
    f"GET /ipfs/{cid}/a/../b",
    "GET /ipfs/QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN/",
    f"GET /ipfs/{cid}/\nhost: example.com",
    f"GET /\nhost: {cid}.ipfs.localhost:8080",
    f"GET /a/b?x=1\nhost: {cid.upper()}.ipfs.example.com",
    "GET /ipns/en.wikipedia-on-ipfs.org/wiki/\nhost: example.com",
    "GET /ipns/example%2Eorg/\nhost: localhost",
    "GET /\nhost: en-wikipedia--on--ipfs-org.ipns.example.com",
    "GET /\nhost: k51qzi5uqu5dlkw8pxuw9qmqayfdeh4kfebhmreauqdc6a7c3y7d5i9fi8mk9w.ipns.localhost",
    "GET /\nhost: 12D3KooWLQzUv2FHWGVPXTXSZpdHs7oHbXub2G5WC8Tx4NQhyd2d.ipns.localhost",
    "GET /ipns/k51qzi5uqu5dlkw8pxuw9qmqayfdeh4kfebhmreauqdc6a7c3y7d5i9fi8mk9w?format=ipns-record",
    "GET /ipns/x\naccept: application/vnd.ipfs.ipns-record",
    "GET //evil.example\nhost: example.com",
    "GET http://example.com/ipfs/" + cid,
]
for h in heads:
    save("request", h.encode())

for size, hdr in [
    (31, "bytes=6-16"), (10, "bytes=5-"), (10, "bytes=-3"), (10, "bytes=0-4, 6-100"),
    (0, "bytes=0-0"), (1 << 40, "bytes=0-,0-,0-"), (2**64 - 1, "bytes=18446744073709551614-"),
    (10, "bytes= -0"), (10, "items=1-2"),
]:
    save("range", struct.pack("<Q", size) + hdr.encode())

for text in [
    b"/home /index.html 200\n/old/* /new/:splat 301\n/users/:id /profile?id=:id 302\n",
    b"# comment\n/a /b\n\n/c https://example.com/:splat 308\n/gone /410.html 410\n/* /404.html 404\n",
    b"\xef\xbb\xbf/caf%C3%A9 /cafe 301\r\n/:a/:b /:b/:a 307\n",
    b"/a/* /:splat 302\x00/a//evil.example\n/a/%5Cevil\n/a/x?y=1\n",
    b"/x /y 301!\n",
    b"/x /y 418\n",
]:
    save("redirects", text)

for doc in [
    (1, b'{"a":{"/":"bafkreihhpc5y2pqvl5rbe5uuyhqjouybfs3rvlmisccgzue2kkt5zq6upq"},"b":[1,2.5,{"/":{"bytes":"aGVsbG8"}}]}'),
    (1, b"[" * 64 + b"]" * 64),
    (3, b'{"x": [1, -1, 1.5e300, "s", null, true]}'),
    (0, b"\xa2\x61\x61\xd8\x2a\x58\x25\x00\x01\x55\x12\x20" + bytes(32) + b"\x61\x62\x80"),
    (0, b"\x9f" * 32),
]:
    save("codec_links", bytes([doc[0]]) + doc[1])

save("unixfs", b"\x01" + b"\x00" * 16)
save("unixfs", b"\x03" + b"\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x22" + b"\x00" * 7 + b"\x02A1a\x01a")
for seed in (b"\x01" + bytes(range(64)), b"\x01" + b"\x03\x00\x05" * 40, b"\x03" + bytes(200)):
    save("provider_stream", seed)
save("ipns_record", b"\x01en.wikipedia-on-ipfs.org")
save("ipns_record", b"\x01bafzaajaiaejcbnmbqwcnjyi4dmyyndbdgfcykdwtxwhvmxtzjw5e5ihfzaaa")
save("car_reader", b"\x0a\xa1\x67version\x01")
PY
for t in "$out"/*; do echo "$(basename "$t"): $(ls "$t" | wc -l) seeds, $(du -sk "$t" | cut -f1) KiB"; done
