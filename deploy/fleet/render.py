#!/usr/bin/env python3
"""Render deploy/fleet/haproxy.cfg.in into a HAProxy configuration (standard library only).

    render.py --bind 0.0.0.0:80 --stats-socket /run/haproxy/cidgate.sock \
        --subdomain-host dweb.example.net \
        --server gw1=10.0.0.11:8080,8081 --server gw2=10.0.0.12:8080,8081 [...] > haproxy.cfg

--server NAME=ADDRESS:PUBLIC_PORT,ADMIN_PORT[,disabled]: one gateway; the active health check
goes to ADMIN_PORT (GET /readyz), requests to PUBLIC_PORT. `disabled` declares a gateway in
maintenance (a spare slot: `set server gateways/NAME state ready` on the stats socket puts it
into the ring without a reload). --subdomain-host HOST (repeatable): the gateways'
server.subdomain_hosts, the same list; only {cid}.ipfs.HOST and {name}.ipns.HOST are keyed on
their first label, every other Host on its /ipfs/ or /ipns/ path or on itself (default:
localhost, cidgate's default). --balance roundrobin replaces the CID-affinity hash (the fleet
harness's comparison run); the default is the hash of the affinity key.
"""
import argparse
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BALANCE = {
    "affinity": "balance hash var(txn.key)",
    "roundrobin": "balance roundrobin",
}


def server_line(spec: str) -> str:
    m = re.fullmatch(r"([A-Za-z0-9_.-]+)=([^,]+):(\d+),(\d+)(,disabled)?", spec)
    if not m:
        raise SystemExit(f"render.py: bad --server {spec!r} (want NAME=ADDRESS:PORT,ADMIN_PORT[,disabled])")
    name, addr, port, admin, disabled = m.groups()
    line = f"    server {name} {addr}:{port} check port {admin}"
    return line + (" disabled" if disabled else "")


# A host name as cidgate's server.subdomain_hosts holds it: DNS labels, no port, no wildcard.
HOST_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


def subdomain_hosts_pattern(hosts: list) -> str:
    """The alternatives of the subdomain ACL's regex: `dweb\\.example\\.net|localhost`."""
    out = []
    for h in hosts:
        h = h.strip().lower().rstrip(".")
        if not HOST_RE.fullmatch(h):
            raise SystemExit(f"render.py: bad --subdomain-host {h!r} (want a host name without port, like dweb.example.net)")
        if h not in out:
            out.append(h)
    return "|".join(h.replace(".", "\\.") for h in out)


def render(template: str, bind: str, socket: str, servers: list, balance: str, subdomain_hosts: list) -> str:
    out = template
    for key, value in {
        "@BIND@": bind,
        "@SUBDOMAIN_HOSTS@": subdomain_hosts_pattern(subdomain_hosts),
        "@STATS_SOCKET@": socket,
        "@BALANCE@": BALANCE[balance],
        "@SERVERS@": "\n".join(server_line(s) for s in servers),
    }.items():
        if key not in out:
            raise SystemExit(f"render.py: placeholder {key} missing from the template")
        out = out.replace(key, value)
    left = re.findall(r"@[A-Z_]+@", out)
    if left:
        raise SystemExit(f"render.py: placeholders left unfilled: {sorted(set(left))}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--template", default=os.path.join(HERE, "haproxy.cfg.in"))
    p.add_argument("--bind", required=True, help="ADDRESS:PORT the balancer listens on")
    p.add_argument("--stats-socket", required=True, help="path of the runtime API socket")
    p.add_argument("--server", action="append", required=True, help="NAME=ADDRESS:PORT,ADMIN_PORT[,disabled]")
    p.add_argument("--subdomain-host", action="append", default=[], metavar="HOST",
                   help="a host of the gateways' server.subdomain_hosts (repeat for each; default localhost)")
    p.add_argument("--balance", choices=sorted(BALANCE), default="affinity")
    a = p.parse_args()
    with open(a.template, encoding="utf-8") as f:
        template = f.read()
    sys.stdout.write(render(template, a.bind, a.stats_socket, a.server, a.balance, a.subdomain_host or ["localhost"]))


if __name__ == "__main__":
    main()
