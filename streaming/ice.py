"""ICE candidate control: which local addresses aioice offers, which remote ones we accept.

aioice gathers host candidates from every interface but leaves 127.0.0.1 out, so on a machine
whose only usable network is loopback (tests, a server behind a reverse proxy on the same host)
no candidate pair can form. :func:`restrict_ice_addresses` replaces aioice's address lister
with a fixed list (e.g. ``("127.0.0.1",)``). It is process-wide (aioice has no per-connection
hook), so a server and a client in one process share it; :func:`filter_sdp_candidates` drops
the remote candidates outside the same list, so no connectivity check ever leaves it.

On a real network leave both alone and, when peers sit behind NAT, give the server a STUN
server (``ServerSettings.ice_servers=("stun:stun.example.org:3478",)``).
"""
from __future__ import annotations

import ipaddress
import logging

import aioice.ice

__all__ = ["restrict_ice_addresses", "filter_sdp_candidates"]

log = logging.getLogger(__name__)
_ORIGINAL = aioice.ice.get_host_addresses


def restrict_ice_addresses(addresses: tuple[str, ...] | list[str] | None) -> None:
    """Offer exactly ``addresses`` as host candidates (None or empty: aioice's default)."""
    if not addresses:
        aioice.ice.get_host_addresses = _ORIGINAL
        return
    addrs = [str(ipaddress.ip_address(a)) for a in addresses]     # ValueError on a typo

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in addrs if (use_ipv4 if ipaddress.ip_address(a).version == 4 else use_ipv6)]

    aioice.ice.get_host_addresses = get_host_addresses
    log.info("ICE host candidates restricted to %s", ", ".join(addrs))


def filter_sdp_candidates(sdp: str, addresses: tuple[str, ...] | list[str] | None) -> str:
    """Drop ``a=candidate`` lines whose address is not in ``addresses`` (None: keep all)."""
    if not addresses:
        return sdp
    allowed = {str(ipaddress.ip_address(a)) for a in addresses}
    keep = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            if len(parts) < 5 or parts[4] not in allowed:
                continue
        keep.append(line)
    return "\r\n".join(keep) + "\r\n"
