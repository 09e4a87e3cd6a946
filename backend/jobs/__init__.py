"""Jobs: a JobSpec in, a stream of protocol events out, result files on disk (``run_job``).

The package sits above the engine (per-prompt optimization) and the generators (instant mode) and is the only one
that knows both; the server's worker and `dreamstill generate` call ``run_job``. Nothing here knows about ZeroMQ or
Blender.
"""

from .run import run_job

__all__ = ["run_job"]
