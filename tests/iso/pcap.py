"""Reading the pcap files QEMU's filter-dump writes: Ethernet → IPv4 → UDP/TCP, DNS question names.

Tolerates a truncated last record (the file is read while QEMU is still writing it).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from pathlib import Path

ETH_IPV4 = 0x0800
ETH_VLAN = 0x8100
PROTO_TCP = 6
PROTO_UDP = 17


@dataclass(frozen=True)
class Packet:
    ts: float
    ethertype: int
    src: str = ""
    dst: str = ""
    proto: int = 0
    sport: int = 0
    dport: int = 0
    payload: bytes = b""


def read_pcap(path: Path) -> list[Packet]:
    data = Path(path).read_bytes()
    if len(data) < 24:
        return []
    magic = data[:4]
    if magic == b"\xd4\xc3\xb2\xa1":
        endian, scale = "<", 1e-6
    elif magic == b"\xa1\xb2\xc3\xd4":
        endian, scale = ">", 1e-6
    elif magic == b"\x4d\x3c\xb2\xa1":
        endian, scale = "<", 1e-9
    else:
        raise ValueError(f"{path}: not a pcap file")
    linktype = struct.unpack_from(endian + "I", data, 20)[0]
    if linktype != 1:
        raise ValueError(f"{path}: link type {linktype}, expected Ethernet")
    packets: list[Packet] = []
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack_from(endian + "IIII", data, pos)
        frame = data[pos + 16 : pos + 16 + incl]
        if len(frame) < incl:
            break  # still being written
        pos += 16 + incl
        packets.append(_decode(sec + frac * scale, frame))
    return packets


def _decode(ts: float, frame: bytes) -> Packet:
    if len(frame) < 14:
        return Packet(ts, 0)
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    offset = 14
    if ethertype == ETH_VLAN and len(frame) >= 18:
        ethertype = struct.unpack_from("!H", frame, 16)[0]
        offset = 18
    if ethertype != ETH_IPV4 or len(frame) < offset + 20:
        return Packet(ts, ethertype)
    ip = frame[offset:]
    ihl = (ip[0] & 0x0F) * 4
    total = struct.unpack_from("!H", ip, 2)[0]
    proto = ip[9]
    src = str(ipaddress.IPv4Address(ip[12:16]))
    dst = str(ipaddress.IPv4Address(ip[16:20]))
    body = ip[ihl:total]
    sport = dport = 0
    payload = b""
    if proto == PROTO_UDP and len(body) >= 8:
        sport, dport = struct.unpack_from("!HH", body, 0)
        payload = body[8:]
    elif proto == PROTO_TCP and len(body) >= 20:
        sport, dport = struct.unpack_from("!HH", body, 0)
        payload = body[(body[12] >> 4) * 4 :]
    return Packet(ts, ethertype, src, dst, proto, sport, dport, payload)


def dns_question(payload: bytes) -> str | None:
    """The first question name of a DNS query message, or None."""
    if len(payload) < 12:
        return None
    flags, qdcount = struct.unpack_from("!HH", payload, 2)
    if flags & 0x8000 or qdcount < 1:
        return None  # a response, or no question
    labels: list[str] = []
    pos = 12
    while pos < len(payload):
        length = payload[pos]
        if length == 0:
            return ".".join(labels)
        if length & 0xC0:
            return None
        labels.append(payload[pos + 1 : pos + 1 + length].decode("ascii", "replace"))
        pos += 1 + length
    return None


def dns_queries(packets: list[Packet]) -> list[tuple[str, str]]:
    """(source address, question name) for every DNS query over UDP."""
    out = []
    for p in packets:
        if p.proto == PROTO_UDP and p.dport == 53:
            name = dns_question(p.payload)
            if name is not None:
                out.append((p.src, name.lower().rstrip(".")))
    return out
