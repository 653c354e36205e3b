"""Which TCP sockets listen, on which address, and for which processes (from `ss -ltnpH`)."""

from __future__ import annotations

import ipaddress
import re
import subprocess
from pathlib import Path


def listening_sockets() -> list[tuple[str, int, set[int]]]:
    """(host, port, owning pids) of every listening TCP socket."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        cols = line.split()
        if len(cols) < 4:
            continue
        host, port = cols[3].rsplit(":", 1)
        host = host.strip("[]").split("%", 1)[0]
        pids = {int(p) for p in re.findall(r"pid=(\d+)", " ".join(cols[5:]))}
        rows.append((host, int(port), pids))
    return rows


def is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:  # "*" and the like: every interface
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def descendants(pid: int) -> set[int]:
    """The live processes below `pid` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found
