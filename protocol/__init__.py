"""dreamstill.protocol: the JobSpec, job events, the wire format and the ZeroMQ client.

Pure Python + numpy + pyzmq so that it imports inside Blender's own Python (no torch, no bpy).
"""

from .addresses import DEFAULT_ADDRESS, is_loopback
from .events import Cancelled, Done, Failed, JobEvent, MeshUpdate, Preview, Progress
from .input_mesh import MESH_MODES, InputMesh, check_mesh_for_mode
from .jobspec import FORMATS, GROUPS, METHODS, MODES, JobSpec, field_defaults, spec_fields
from .messages import Message, decode, encode
from .newest import NewestEvents, split_newest
from .prompts import parse_prompts, read_prompts
from .schema import JobSpecError, Setting, SpecField, setting
from .wire import PROTOCOL_VERSION, ProtocolError

__all__ = [
    "DEFAULT_ADDRESS",
    "is_loopback",
    "Cancelled",
    "Done",
    "Failed",
    "JobEvent",
    "MeshUpdate",
    "Preview",
    "Progress",
    "MESH_MODES",
    "InputMesh",
    "check_mesh_for_mode",
    "FORMATS",
    "GROUPS",
    "METHODS",
    "MODES",
    "JobSpec",
    "JobSpecError",
    "Setting",
    "SpecField",
    "field_defaults",
    "setting",
    "spec_fields",
    "Message",
    "decode",
    "encode",
    "NewestEvents",
    "split_newest",
    "parse_prompts",
    "read_prompts",
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
