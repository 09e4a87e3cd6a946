"""Where the add-on finds the Dreamstill protocol, and the address policy it shares with the server.

The built extension carries it as ``_vendor/dreamstill_protocol`` (see ``dreamstill build-addon``); when the add-on
runs from the repository (``dreamstill.blender_addon``) the installed ``dreamstill.protocol`` is used. pyzmq, which
the client needs, is imported only by :func:`client_api`, so the add-on registers and can say what is missing even
when the wheel could not be installed. No bpy here: the bpy-free modules (mesh_data, placement, reporting) import
this one.
"""

from __future__ import annotations

import ipaddress
import re

try:
    from ._vendor import dreamstill_protocol as protocol
except ImportError:
    try:
        from dreamstill import protocol
    except ImportError as err:
        raise ImportError(
            "the Dreamstill protocol package is missing; install the extension zip made by "
            "`dreamstill build-addon -o DIR` (it carries the protocol inside)"
        ) from err

JobSpec = protocol.JobSpec
JobSpecError = protocol.JobSpecError


def _fallback_is_loopback(address: str) -> bool:
    """True for ipc://, inproc:// and tcp:// on 127.0.0.0/8, ::1 or localhost (nothing else can reach them)."""
    if address.startswith(("ipc://", "inproc://")):
        return True
    match = re.match(r"^tcp://(\[[^\]]+\]|[^:/]+):(\d+|\*)$", address)
    if not match:
        return False
    host = match.group(1).strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name such as 127.example.com: another machine


def _shared(name: str, fallback):
    try:
        return getattr(protocol, name)
    except (AttributeError, ImportError):
        return fallback


# MERGE: the jobspec helper adds is_loopback and DEFAULT_ADDRESS to dreamstill.protocol (one policy for server, CLI
# and add-on). Until that lands these two lines fall back to the copies above (same rules as the server's
# backend/server/keys.py); after the merge, delete _fallback_is_loopback, _shared and the literal below.
is_loopback = _shared("is_loopback", _fallback_is_loopback)
DEFAULT_ADDRESS = _shared("DEFAULT_ADDRESS", "tcp://127.0.0.1:5555")


def client_api():
    """The client module (``Client``, ``ServerUnavailable``, ``ServerError``, ``load_client_keys``, ``check_address``).

    ImportError with a fix when pyzmq is not there (Blender installs it from the extension's wheels)."""
    try:
        import zmq  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "pyzmq is not installed in Blender's Python: reinstall the Dreamstill extension zip for "
            "this platform (it carries the pyzmq wheels) and restart Blender"
        ) from err
    return __import__(protocol.__name__ + ".client", fromlist=["Client"])
