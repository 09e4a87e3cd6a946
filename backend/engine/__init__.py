"""The loops: per-prompt optimization as a generator of events (``run_job``), with cancel, checkpoints and resume.

Nothing here knows about ZeroMQ or Blender.
"""

from .job import run_job
from .optimize import AssetOptimizer, EngineDefaults

__all__ = ["AssetOptimizer", "EngineDefaults", "run_job"]
