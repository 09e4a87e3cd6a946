"""dreamstill.protocol: the JobSpec, job events, the wire format and the ZeroMQ client.

Pure Python + numpy + pyzmq so that it imports inside Blender's own Python (no torch, no bpy).
"""

from .events import Cancelled, Done, Failed, JobEvent, MeshUpdate, Preview, Progress
from .jobspec import FORMATS, METHODS, MODES, JobSpec, JobSpecError
from .messages import Message, decode, encode
from .wire import PROTOCOL_VERSION, ProtocolError

__all__ = [
    "Cancelled",
    "Done",
    "Failed",
    "JobEvent",
    "MeshUpdate",
    "Preview",
    "Progress",
    "FORMATS",
    "METHODS",
    "MODES",
    "JobSpec",
    "JobSpecError",
    "Message",
    "decode",
    "encode",
    "PROTOCOL_VERSION",
    "ProtocolError",
    "Client",
    "ServerError",
    "ServerUnavailable",
    "load_client_keys",
]


def __getattr__(name):
    """The client needs pyzmq; import it only when asked for, so specs and events work without pyzmq."""
    if name in ("Client", "ServerError", "ServerUnavailable", "load_client_keys"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'dreamstill.protocol' has no attribute {name!r}")
