"""3D representations: hash-grid encoding, density NeRF and SDF fields, occupancy grid, backgrounds, regularizers."""

from .activations import trunc_exp
from .background import Background, BackgroundConfig
from .base import Field
from .hashgrid import HashGridConfig, HashGridEncoding, dense_index, level_lookup, spatial_hash, tcnn_available
from .nerf import DensityField, DensityFieldConfig
from .occupancy import OccupancyGrid
from .sdf import SDFField, SDFFieldConfig
from .sdf_init import SDFInitConfig, sdf_field_from_density

__all__ = [
    "Background",
    "BackgroundConfig",
    "DensityField",
    "DensityFieldConfig",
    "Field",
    "HashGridConfig",
    "HashGridEncoding",
    "OccupancyGrid",
    "SDFField",
    "SDFFieldConfig",
    "SDFInitConfig",
    "dense_index",
    "sdf_field_from_density",
    "level_lookup",
    "spatial_hash",
    "tcnn_available",
    "trunc_exp",
]
