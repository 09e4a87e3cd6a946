"""dreamstill.protocol: the JobSpec, job events, the wire format and the ZeroMQ client.

Pure Python + numpy + pyzmq so that it imports inside Blender's own Python (no torch, no bpy).
"""

from .events import Cancelled, Done, Failed, JobEvent, MeshUpdate, Preview, Progress
from .jobspec import FORMATS, METHODS, MODES, JobSpec, JobSpecError

__all__ = [
    "Cancelled", "Done", "Failed", "JobEvent", "MeshUpdate", "Preview", "Progress",
    "FORMATS", "METHODS", "MODES", "JobSpec", "JobSpecError",
]
