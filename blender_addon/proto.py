"""Where the add-on finds the Dreamstill protocol, and the address policy it shares with the server.

The built extension carries it as ``_vendor/dreamstill_protocol`` (see ``dreamstill build-addon``); when the add-on
runs from the repository (``dreamstill.blender_addon``) the installed ``dreamstill.protocol`` is used. pyzmq, which
the client needs, is imported only by :func:`client_api`, so the add-on registers and can say what is missing even
when the wheel could not be installed. No bpy here: the bpy-free modules (mesh_data, placement, reporting) import
this one.
"""

from __future__ import annotations

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
DEFAULT_ADDRESS = protocol.DEFAULT_ADDRESS
is_loopback = protocol.is_loopback


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
