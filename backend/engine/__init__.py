"""The loops' building blocks: per-prompt optimization (``AssetOptimizer``), the distillation step shared with
amortized training (``DistillStep``), the Asset protocol and its field implementation.

Nothing here knows about ZeroMQ, Blender, jobs or generators (``dreamstill.backend.jobs`` sits above).
"""

from .asset import Asset, FieldAsset
from .optimize import AssetOptimizer, EngineDefaults
from .step import DistillStep, DistillViews, ShadingSchedule

__all__ = ["Asset", "AssetOptimizer", "DistillStep", "DistillViews", "EngineDefaults", "FieldAsset", "ShadingSchedule"]
