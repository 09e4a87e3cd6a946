"""Backend addresses: the one default, and the one rule for what counts as "this machine".

A ZeroMQ address is ``tcp://HOST:PORT``, ``ipc:///path`` or ``inproc://name``. Only an address that nothing
outside this machine can reach is local: it may skip CURVE encryption (server) and Blender's online-access guard
(add-on). A host name is never local, however it is spelled (``tcp://127.example.com`` resolves wherever DNS says).
"""

from __future__ import annotations

import ipaddress
import re

DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"

# tcp://HOST:PORT with HOST a bracketed IPv6 literal or anything without ':' or '/'; PORT a number or '*'.
_TCP = re.compile(r"^tcp://(\[[^\]]+\]|[^:/\[\]]+):(\d+|\*)$")


def is_loopback(address: str) -> bool:
    """True for ipc://, inproc:// and tcp:// on 127.0.0.0/8, ::1 or ``localhost``; False for anything else.

    The host must be an IP literal on the loopback network or the word ``localhost``: host names (even ones that
    start with ``127.``), interface names, wildcards and ZeroMQ's ``source;destination`` form are not local.
    """
    if not isinstance(address, str):
        return False
    if address.startswith(("ipc://", "inproc://")):
        return True
    match = _TCP.match(address)
    if match is None:
        return False
    host = match.group(1)
    if host.startswith("["):
        host = host[1:-1]
    if host.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is 127.0.0.1
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


__all__ = ["DEFAULT_ADDRESS", "is_loopback"]
