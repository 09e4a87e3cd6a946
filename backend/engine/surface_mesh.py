"""The mesh of a signed-distance asset (the surface stage's): repaired SDF grid -> marching cubes -> clean-up ->
decimation -> flat faces snapped -> smooth normals -> baked texture, phase by phase like engine.meshing.

  mesh      d sampled on a resolution^3 grid over the box; its solid {d < 0} repaired (mesh/voxels.py: the largest
            part per object of the prompt, none under ``min_part_fraction`` of the largest, tunnels and pits
            narrower than ~2 close_radius closed without joining objects that stand apart, enclosed voids filled),
            d replaced by the repaired solid's distance only around what changed; marching cubes at level 0
            (watertight inside the box: the grid is padded with outside); clean-up (mesh/cleanup.py: welding, the
            same parts kept, small holes filled, outward faces);
  decimate  quadric decimation to ``max_faces``, welded again (collapses leave duplicate vertices), then
            flat faces made flat (mesh/planes.py: a light Taubin smoothing, then the planar regions found and
            snapped onto their planes; curved surfaces keep their shape) unless ``planes`` is None;
  bake      smooth vertex normals and vertex colours, then a texture_size^2 UV bake of the albedo
            (engine.meshing.appearance_phases).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field, replace

from ..mesh.planes import PlaneSettings
from .meshing import appearance_phases, decimate_or_warn, field_functions


@dataclass
class SurfaceMeshSettings:
    """How an SDF's mesh is repaired and cleaned."""

    # closing radius of the SDF grid repair (world units): only tunnels and pits the geometry stage opened; a
    # repaired patch takes the voxel distance transform's surface, so this stays small
    close_radius: float = 0.04
    keep_components: int | None = 1  # the number of objects of the prompt (None: every part)
    min_part_fraction: float = 0.03  # parts smaller than this fraction of the largest are dropped (floaters)
    keep_apart: int = 1  # up to this many parts are closed each on its own (the prompt's objects that stand apart)
    max_hole_edges: int = 64
    # the flat faces of the decimated mesh snapped flat (None: not); instant mode turns it off for its latency
    planes: PlaneSettings | None = field(default_factory=PlaneSettings)

    def for_objects(self, objects: int | None, apart: int = 1) -> SurfaceMeshSettings:
        """These settings for a prompt of ``objects`` objects (None: free-form, every large part kept), ``apart`` of
        which stand apart (engine.surface.objects_apart_in_prompt)."""
        return replace(self, keep_components=objects, keep_apart=apart)


def sdf_mesh(sdf, bound: float, resolution: int, settings: SurfaceMeshSettings):
    """(clean watertight mesh, report) of the SDF function ``sdf`` ((N, 3) -> (N,)) on a resolution^3 grid."""
    from ..mesh.cleanup import clean_mesh, marching_cubes_sdf, sdf_grid
    from ..mesh.voxels import repair_sdf_grid

    values, changed = repair_sdf_grid(
        sdf_grid(sdf, bound, resolution),
        2 * bound / (resolution - 1),
        settings.keep_components,
        settings.close_radius,
        min_fraction=settings.min_part_fraction,
        keep_apart=settings.keep_apart,
    )
    raw = marching_cubes_sdf(values, bound)
    mesh, report = clean_mesh(raw, settings.keep_components, settings.max_hole_edges, settings.min_part_fraction)
    return mesh, {"repaired_voxels": changed, "marching_cubes_faces": raw.num_faces, **report}


def surface_mesh_phases(
    field,
    device,
    resolution: int,
    texture_size: int,
    max_faces: int | None,
    settings: SurfaceMeshSettings,
    warnings: list[str] | None,
) -> Generator[str, None, object]:
    """Yield each phase's name as it starts ("mesh", then "decimate" and "bake" when they apply: the names of
    engine.meshing.mesh_phase_names), return the mesh. ``field`` has ``sdf(x)``, ``field(x) -> (density, albedo)``
    and ``bound``. Raises mesh.EmptyFieldError when the SDF has no inside on the grid."""
    from ..mesh.cleanup import weld
    from ..mesh.planes import flatten_planar_regions

    sdf, albedo = field_functions(field, device, "sdf")
    yield "mesh"
    mesh, _ = sdf_mesh(sdf, float(field.bound), resolution, settings)
    if max_faces:
        yield "decimate"
        mesh = weld(decimate_or_warn(mesh, max_faces, albedo, warnings))
    mesh = flatten_planar_regions(mesh, settings.planes)
    return (yield from appearance_phases(mesh, albedo, texture_size, warnings))
