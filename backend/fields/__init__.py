"""3D representations: hash-grid encoding, density NeRF field, occupancy grid, backgrounds."""

from .activations import trunc_exp
from .background import Background, BackgroundConfig
from .base import Field
from .hashgrid import HashGridConfig, HashGridEncoding, dense_index, level_lookup, spatial_hash, tcnn_available
from .nerf import DensityField, DensityFieldConfig
from .occupancy import OccupancyGrid

__all__ = [
    "Background",
    "BackgroundConfig",
    "DensityField",
    "DensityFieldConfig",
    "Field",
    "HashGridConfig",
    "HashGridEncoding",
    "OccupancyGrid",
    "dense_index",
    "level_lookup",
    "spatial_hash",
    "tcnn_available",
    "trunc_exp",
]
