"""The loops' building blocks: per-prompt optimization (``AssetOptimizer``), the distillation step shared with
amortized training (``DistillStep``), the Asset protocol and its field implementation.

Nothing here knows about ZeroMQ, Blender, jobs or generators (``dreamstill.backend.jobs`` sits above). ``run_job``
is still importable from here for callers not yet updated (the server's DEFAULT_RUNNER "...engine:run_job").
"""

from .asset import Asset, FieldAsset
from .optimize import AssetOptimizer, EngineDefaults
from .step import DistillStep, DistillViews, ShadingSchedule


def __getattr__(name: str):
    # run_job moved to dreamstill.backend.jobs. This lazy re-export (and engine/job.py) is the engine's only import of
    # jobs, a compatibility shim the import-graph test allows by name: remove both once backend/server/worker.py
    # (DEFAULT_RUNNER) and backend/cli.py import dreamstill.backend.jobs.
    if name == "run_job":
        from .job import run_job

        return run_job
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Asset", "AssetOptimizer", "DistillStep", "DistillViews", "EngineDefaults", "FieldAsset", "ShadingSchedule"]
