"""The client pool: one protocol ``Client`` per backend address, made on first use and reused, and the address
policy (a backend on another machine only with Blender's online access allowed).

Main thread only, like everything that touches the sockets.
"""

from __future__ import annotations

import bpy

from .preferences import prefs
from .proto import DEFAULT_ADDRESS, client_api, is_loopback

POOL: dict = {}  # address -> Client


def address_for(server: str) -> str:
    """The address to use: the operator's / panel's ``server`` when set, else the preferences'. ValueError when it is
    malformed, or on another machine while Blender's online access is off."""
    address = client_api().check_address((server or "").strip() or (prefs().address or "").strip() or DEFAULT_ADDRESS)
    if not bpy.app.online_access and not is_loopback(address):
        raise ValueError(
            f"{address} is on another machine and Blender's online access is off: allow it in "
            "Preferences > System > Network, or run the backend on this machine"
        )
    return address


def client_for(address: str):
    """The client for ``address`` (made once; CURVE keys from the preferences' keys folder when set)."""
    client = POOL.get(address)
    if client is not None and not client.closed:
        return client
    api = client_api()
    p = prefs()
    kwargs = {}
    if (p.keys_dir or "").strip():
        kwargs = api.load_client_keys(bpy.path.abspath(p.keys_dir.strip()))
    client = api.Client(address, timeout_s=float(p.timeout_s), **kwargs)
    POOL[address] = client
    return client


def drop_client(address: str) -> None:
    """Close and forget the client of ``address`` (the next use makes a fresh one)."""
    client = POOL.pop(address, None)
    if client is not None:
        client.close()


def close_all() -> None:
    """Close every socket."""
    for address in list(POOL):
        drop_client(address)
