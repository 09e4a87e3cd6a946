"""SDF meshing and mesh clean-up: watertight marching cubes, parts kept, holes filled, topology and face directions."""

import math

import numpy as np
import pytest
import torch

from dreamstill.backend.mesh import EmptyFieldError, Mesh
from dreamstill.backend.mesh.cleanup import (
    axis_aligned_area_share,
    boundary_loops,
    clean_mesh,
    fill_small_holes,
    keep_largest_parts,
    mesh_sdf,
    sdf_grid,
    smooth_vertex_normals,
    topology,
)


def sphere(centre=(0.0, 0.0, 0.0), radius=0.4):
    c = torch.tensor(centre)
    return lambda x: (x - c).norm(dim=-1) - radius


def torus(x, R=0.4, r=0.16):
    q = torch.sqrt(x[:, 0] ** 2 + x[:, 1] ** 2) - R
    return torch.sqrt(q**2 + x[:, 2] ** 2) - r


def box(x, half=0.42):
    q = x.abs() - half
    return q.clamp_min(0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0)


def signed_volume(mesh: Mesh) -> float:
    a, b, c = (mesh.vertices[mesh.faces[:, k]].astype(np.float64) for k in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6)


def test_sdf_sphere_mesh_is_watertight_outward_and_the_right_size():
    mesh = mesh_sdf(sphere(radius=0.5), 1.0, resolution=48)
    topo = topology(mesh)
    assert topo.watertight and topo.components == 1 and topo.euler == 2 and topo.genus == 0
    assert signed_volume(mesh) == pytest.approx(4 / 3 * math.pi * 0.5**3, rel=0.02)  # positive: outward faces
    assert np.abs(np.linalg.norm(mesh.vertices, axis=1) - 0.5).max() < 0.01


def test_sdf_torus_has_euler_zero_and_a_shape_cut_by_the_box_is_closed():
    topo = topology(mesh_sdf(torus, 1.0, resolution=64))
    assert (topo.components, topo.euler, topo.genus, topo.watertight, topo.boundary_edges) == (1, 0, 1, True, 0)
    cut = topology(mesh_sdf(sphere(radius=1.5), 1.0, resolution=16))  # fills the whole box: closed by the padding
    assert cut.watertight and cut.euler == 2
    with pytest.raises(EmptyFieldError, match="no inside"):
        mesh_sdf(sphere(radius=0.01), 1.0, resolution=16)


def test_narrow_band_sampling_gives_the_full_grids_surface_for_a_fraction_of_the_samples(monkeypatch):
    """sdf_grid samples a coarse grid, then exactly only near the surface: on a torus above a small cube (half 0.03,
    under one coarse cell) every sign and every value within a fine cell of the surface are the full grid's, with
    under a third of its evaluations."""
    from dreamstill.backend.mesh import cleanup

    calls = []

    def scene(x):
        calls.append(len(x))
        return torch.minimum(torus(x), box(x - torch.tensor([0.0, 0.0, -0.6]), half=0.03))

    banded = sdf_grid(scene, 1.0, 64)
    banded_calls = sum(calls)
    monkeypatch.setattr(cleanup, "NARROW_BAND_MIN_RESOLUTION", 10**6)
    calls.clear()
    full = sdf_grid(scene, 1.0, 64)
    assert sum(calls) == 64**3 and banded_calls < 64**3 / 3
    assert np.array_equal(np.sign(banded), np.sign(full))
    near = np.abs(full) < 2.0 / 63
    assert near.sum() > 1000 and np.abs(banded - full)[near].max() < 1e-6
    assert topology(cleanup.marching_cubes_sdf(banded, 1.0)).components == 2


def test_keep_largest_parts_by_count_of_objects():
    two = lambda x: torch.minimum(sphere((0.5, 0, 0), 0.3)(x), sphere((-0.5, 0, 0), 0.2)(x))  # noqa: E731
    mesh = mesh_sdf(two, 1.0, resolution=48)
    assert topology(mesh).components == 2
    one, removed = keep_largest_parts(mesh, 1)
    assert removed == 1 and topology(one).components == 1
    assert one.vertices[:, 0].min() > 0.1  # the larger sphere (at +x) stayed
    both, removed = keep_largest_parts(mesh, 2)
    assert removed == 0 and both.num_faces == mesh.num_faces
    with pytest.raises(ValueError, match="keep_components"):
        keep_largest_parts(mesh, 0)


def test_small_holes_are_filled_and_the_mesh_closes_again():
    mesh = mesh_sdf(sphere(radius=0.5), 1.0, resolution=32)
    top = np.argsort(-mesh.vertices[mesh.faces].mean(1)[:, 2])[:6]  # cut out the 6 faces around the top
    holed = Mesh(mesh.vertices, np.delete(mesh.faces, top, axis=0))
    loops = boundary_loops(holed.faces)
    assert len(loops) == 1 and not topology(holed).watertight
    filled, n = fill_small_holes(holed, max_hole_edges=64)
    assert n == 1
    topo = topology(filled)
    assert topo.watertight and topo.euler == 2
    assert signed_volume(filled) == pytest.approx(signed_volume(mesh), rel=0.01)  # patch wound outward
    assert fill_small_holes(holed, max_hole_edges=len(loops[0]) - 1)[1] == 0  # bigger holes are left alone


def test_clean_mesh_reports_what_it_did():
    two = lambda x: torch.minimum(sphere((0.4, 0, 0), 0.35)(x), sphere((-0.6, 0, 0), 0.1)(x))  # noqa: E731
    mesh = mesh_sdf(two, 1.0, resolution=48)
    cleaned, report = clean_mesh(mesh, keep_components=1)
    assert report["removed_components"] == 1 and report["filled_holes"] == 0
    assert report["watertight"] and report["euler"] == 2 and report["components"] == 1
    assert report["faces"] == cleaned.num_faces


def test_smooth_vertex_normals_of_a_sphere_are_radial():
    mesh = mesh_sdf(sphere(radius=0.5), 1.0, resolution=32)
    n = smooth_vertex_normals(mesh)
    radial = mesh.vertices / np.linalg.norm(mesh.vertices, axis=1, keepdims=True)
    assert np.einsum("ij,ij->i", n, radial).min() > 0.98


def test_axis_aligned_share_of_a_cube_and_a_sphere():
    cube = mesh_sdf(box, 1.0, resolution=48)
    assert axis_aligned_area_share(cube, 15.0) > 0.9
    # a cube turned 45 degrees about Z: its side faces are off-axis, unless the frame turns with it
    turned = cube.copy(
        vertices=(cube.vertices @ np.array([[0.7071068, -0.7071068, 0], [0.7071068, 0.7071068, 0], [0, 0, 1]]).T)
    )
    assert axis_aligned_area_share(turned, 15.0) < 0.5
    assert axis_aligned_area_share(turned, 15.0, rotation_z_deg=45.0) > 0.9
    # a sphere: the share within 15 degrees of the six axes is 6 caps, 6 * 2 pi (1 - cos 15) / (4 pi)
    ball = mesh_sdf(sphere(radius=0.5), 1.0, resolution=64)
    assert axis_aligned_area_share(ball, 15.0) == pytest.approx(3 * (1 - math.cos(math.radians(15))), abs=0.02)


def test_parts_under_a_fraction_of_the_largest_are_dropped_whatever_the_count():
    from dreamstill.backend.mesh.cleanup import weld

    big, other, speck = (
        mesh_sdf(sphere((-0.4, 0, 0), 0.3), 1.0, 40),
        mesh_sdf(sphere((0.4, 0, 0), 0.25), 1.0, 40),
        mesh_sdf(sphere((0, 0.7, 0), 0.06), 1.0, 40),
    )
    offsets = np.cumsum([0, big.num_vertices, other.num_vertices])
    parts = Mesh(
        np.concatenate([big.vertices, other.vertices, speck.vertices]),
        np.concatenate([big.faces + offsets[0], other.faces + offsets[1], speck.faces + offsets[2]]),
    )
    kept, removed = keep_largest_parts(weld(parts), None, min_fraction=0.1)  # speck: (0.06 / 0.3)^2 = 4% of the area
    assert removed == 1 and topology(kept).components == 2
    kept, removed = keep_largest_parts(weld(parts), 2, min_fraction=0.0)
    assert removed == 1 and topology(kept).components == 2
    assert keep_largest_parts(weld(parts), None)[1] == 0


def test_normals_follow_vertices_split_along_seams():
    from dreamstill.backend.mesh.cleanup import follow_split, with_smooth_normals

    mesh = with_smooth_normals(mesh_sdf(sphere(), 1.0, resolution=24))
    split = np.concatenate([np.arange(mesh.num_vertices), [0, 5, 5]])  # vertices 0 and 5 duplicated
    after = Mesh(mesh.vertices[split], mesh.faces)
    followed = follow_split(mesh, after)
    np.testing.assert_array_equal(followed.normals, mesh.normals[split])
    moved = Mesh(after.vertices + 1e-3, after.faces)
    assert follow_split(mesh, moved).normals is None  # a vertex that is not one of the mesh's: nothing to follow
    assert mesh.copy(vertices=mesh.vertices * 2).normals is None  # new vertices drop the old normals
