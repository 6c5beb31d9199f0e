#!/usr/bin/env python3
"""An HTTP/1.1 proxy on 127.0.0.1 that holds every request for --delay seconds before passing it
to --upstream: a storage provider far away (load tests only; never part of the product).

Each request is forwarded on its own upstream connection and answered with Connection: close,
so every request pays the delay once, as a request to a distant provider would."""
import argparse
import asyncio
import sys


async def pipe(reader, writer):
    try:
        while True:
            chunk = await reader.read(1 << 16)
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def handle(client_r, client_w, host, port, delay):
    try:
        head = await client_r.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        client_w.close()
        return
    lines = head.split(b"\r\n")
    kept = [l for l in lines[1:] if l and not l.lower().startswith((b"connection:", b"keep-alive:"))]
    request = b"\r\n".join([lines[0]] + kept + [b"Connection: close", b"", b""])
    await asyncio.sleep(delay)
    try:
        up_r, up_w = await asyncio.open_connection(host, port)
    except OSError:
        client_w.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await client_w.drain()
        client_w.close()
        return
    up_w.write(request)
    await up_w.drain()
    await pipe(up_r, client_w)
    up_w.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True, help="host:port")
    ap.add_argument("--delay", type=float, default=0.2)
    ap.add_argument("--port-file", required=True)
    a = ap.parse_args()
    host, port = a.upstream.rsplit(":", 1)
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, host, int(port), a.delay), "127.0.0.1", 0)
    with open(a.port_file, "w") as f:
        f.write(str(server.sockets[0].getsockname()[1]))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
