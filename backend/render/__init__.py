"""Cameras, volume rendering and shading."""

from .cameras import Cameras, fov_to_focal, orbit_cameras, sample_cameras, view_suffix, with_view_suffix
from .shading import SHADINGS, lambertian, sample_light_positions, shade
from .volume import (
    RenderOutput,
    RenderSettings,
    composite_weights,
    interval_edges,
    ray_sphere_intersect,
    render,
    sample_pdf,
    stratified_samples,
)

__all__ = [
    "Cameras",
    "RenderOutput",
    "RenderSettings",
    "SHADINGS",
    "composite_weights",
    "fov_to_focal",
    "interval_edges",
    "lambertian",
    "orbit_cameras",
    "ray_sphere_intersect",
    "render",
    "sample_cameras",
    "sample_light_positions",
    "sample_pdf",
    "shade",
    "stratified_samples",
    "view_suffix",
    "with_view_suffix",
]
