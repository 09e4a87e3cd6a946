"""Voxel operations: closing keeps a torus's hole and fills a cube's pit and tunnel, exact signed distances, SDF
grid repair."""

import numpy as np
import pytest

from dreamstill.backend.mesh.cleanup import marching_cubes_sdf, topology
from dreamstill.backend.mesh.voxels import (
    ball_structure,
    close_small_features,
    fill_cavities,
    keep_largest_components,
    repair_sdf_grid,
    signed_distance,
)

N = 64
BOUND = 1.0
H = 2 * BOUND / (N - 1)


def grid_points(n=N, bound=BOUND):
    axis = np.linspace(-bound, bound, n)
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1)


def torus_occupancy(R=0.4, r=0.16):
    p = grid_points()
    q = np.sqrt(p[..., 0] ** 2 + p[..., 1] ** 2) - R
    return np.sqrt(q**2 + p[..., 2] ** 2) <= r


def cube_occupancy(half=0.42):
    return np.abs(grid_points()).max(-1) <= half


def test_sphere_occupancy_gives_the_sphere_radius_within_a_voxel():
    radius = 0.55
    occ = np.linalg.norm(grid_points(), axis=-1) <= radius
    d = signed_distance(occ, H)
    mesh = marching_cubes_sdf(d, BOUND)
    r = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(r.mean() - radius) < H and np.abs(r - radius).max() < H
    # d is a distance: every sample is within a voxel of its true signed distance ||p|| - radius
    assert np.abs(d - (np.linalg.norm(grid_points(), axis=-1) - radius)).max() < H


def test_signed_distance_of_a_half_space_is_exact_in_voxel_units():
    occ = np.zeros((8, 8, 8), bool)
    occ[:4] = True  # inside for x index < 4: the surface sits at index 3.5
    d = signed_distance(occ, 0.5)
    assert np.allclose(d[:, 2, 2], (np.arange(8) - 3.5) * 0.5)
    with pytest.raises(ValueError, match="no surface"):
        signed_distance(np.ones((4, 4, 4), bool), 1.0)


def test_closing_keeps_the_torus_hole():
    occ = close_small_features(torus_occupancy(), 0.06 / H)
    topo = topology(marching_cubes_sdf(signed_distance(occ, H), BOUND))
    assert topo.components == 1 and topo.watertight
    assert topo.euler == 0 and topo.genus == 1


def test_closing_fills_a_small_pit_and_a_thin_tunnel_of_a_cube():
    occ = cube_occupancy()
    p = grid_points()
    pit = (np.hypot(p[..., 0], p[..., 1]) < 0.05) & (p[..., 2] > 0.3)  # a narrow pit into the top face
    tunnel = (np.hypot(p[..., 1], p[..., 2]) < 0.04) & (np.abs(p[..., 0]) < 0.5)  # a thin hole right through
    damaged = occ & ~pit & ~tunnel
    before = topology(marching_cubes_sdf(signed_distance(damaged, H), BOUND))
    assert before.genus == 1  # the tunnel makes it a torus
    closed = close_small_features(damaged, 0.06 / H)
    assert closed[pit & occ].all() and closed[tunnel & occ].all()
    after = topology(marching_cubes_sdf(signed_distance(closed, H), BOUND))
    assert after.euler == 2 and after.genus == 0


def test_closing_leaves_the_gap_between_objects_that_stand_apart():
    p = grid_points()
    left = np.abs(p - [0.0, -0.3, 0.0]).max(-1) <= 0.26  # two cubes 0.08 apart, as "X next to Y" places them
    right = np.abs(p - [0.0, 0.3, 0.0]).max(-1) <= 0.26
    pit = (np.hypot(p[..., 0], p[..., 1] - 0.3) < 0.05) & (p[..., 2] > 0.15)  # a narrow pit into the right one
    occ = left | (right & ~pit)
    radius = 0.12 / H  # the SDF init's closing: bridges any gap narrower than 0.24

    def parts(solid):
        return topology(marching_cubes_sdf(signed_distance(solid, H), BOUND)).components

    assert parts(close_small_features(occ, radius)) == 1  # as a whole: the two cubes become one part
    apart = close_small_features(occ, radius, keep_apart=2)
    assert parts(apart) == 2 and not apart[np.abs(p[..., 1]) < 0.03].any()
    assert apart[pit & right].all()  # each part is still closed: the pit is filled
    # more parts than keep_apart (here a crack through both cubes: 4 parts): the whole is closed, as before
    cracked = occ & ~(np.abs(p[..., 0]) < 0.02)
    assert parts(cracked) == 4 and parts(close_small_features(cracked, radius, keep_apart=2)) == 1


def test_keep_largest_components_and_fill_cavities():
    p = grid_points()
    big = np.linalg.norm(p - [0.4, 0, 0], axis=-1) < 0.3
    small = np.linalg.norm(p - [-0.5, 0, 0], axis=-1) < 0.1
    assert keep_largest_components(big | small, 1).sum() == big.sum()
    assert (keep_largest_components(big | small, 2) == (big | small)).all()
    assert (keep_largest_components(big | small, None) == (big | small)).all()
    shell = big & ~(np.linalg.norm(p - [0.4, 0, 0], axis=-1) < 0.15)
    assert (fill_cavities(shell) == big).all()
    assert ball_structure(1.0).sum() == 7 and ball_structure(0.5).sum() == 1


def test_repair_sdf_grid_removes_a_bubble_and_a_floater_and_keeps_the_rest_exact():
    p = grid_points()
    d = np.linalg.norm(p, axis=-1) - 0.5  # the ball
    d = np.minimum(d, np.linalg.norm(p - [0.8, 0.0, 0.0], axis=-1) - 0.08)  # a floater outside
    d = np.maximum(d, -(np.linalg.norm(p - [0.0, 0.0, 0.1], axis=-1) - 0.1))  # a bubble (void) inside
    d = d.astype(np.float32)
    assert topology(marching_cubes_sdf(d, BOUND)).components == 3
    repaired, changed = repair_sdf_grid(d, H, keep_components=1, close_radius=0.0)
    assert changed > 0
    topo = topology(marching_cubes_sdf(repaired, BOUND))
    assert topo.components == 1 and topo.euler == 2
    far = np.linalg.norm(p - [0.0, 0.0, -0.45], axis=-1) < 0.05  # the ball's surface far from both repairs
    assert np.array_equal(repaired[far], d[far])
    same, none = repair_sdf_grid(np.linalg.norm(p, axis=-1).astype(np.float32) - 0.5, H, 1, 0.06)
    assert none == 0


def test_components_under_a_fraction_of_the_largest_are_dropped():
    p = grid_points()
    big = np.linalg.norm(p - [0.4, 0, 0], axis=-1) <= 0.3
    small = np.linalg.norm(p - [-0.4, 0, 0], axis=-1) <= 0.2  # (2/3)^3 = 30% of the big one's voxels
    speck = np.linalg.norm(p - [0, 0.7, 0], axis=-1) <= 0.06  # 0.8%
    occ = big | small | speck
    np.testing.assert_array_equal(keep_largest_components(occ, None, min_fraction=0.05), big | small)
    np.testing.assert_array_equal(keep_largest_components(occ, 2), big | small)
    np.testing.assert_array_equal(keep_largest_components(occ, 2, min_fraction=0.5), big)
    assert keep_largest_components(occ, None) is occ


def cone_shell():
    """(a solid cone, base down at z = -0.5, and the same cone as a shell 0.07 thick, open at the bottom)."""
    p = grid_points()
    r, z = np.linalg.norm(p[..., :2], axis=-1), p[..., 2]
    solid = (r <= (0.5 - z) * 0.6) & (z >= -0.5) & (z <= 0.5)
    hollow = (r <= (0.5 - z) * 0.6 - 0.07) & (z >= -0.5) & (z <= 0.43)
    return solid, solid & ~hollow


def test_carving_fills_hollows_no_camera_sees_into_and_keeps_seen_space_empty():
    """The carved solid holds the true solid and the hollows no camera sees into; it exceeds the truth by the carving
    margin (a voxel and a pixel around the surface) and the wedge under a flat base that the lowest camera misses."""
    from dreamstill.backend.mesh.voxels import carve_seen_space, orbit_viewpoints

    opaque = 60.0  # a density that renders opaque within a voxel or two
    above = orbit_viewpoints((-10.0, 45.0), 2.5)
    solid, shell = cone_shell()
    hollow = solid & ~shell
    carved = carve_seen_space(shell * opaque, -BOUND, H, above)
    assert (solid & ~carved).sum() == 0  # the hollow is filled, the shell kept
    assert (carved & ~solid).sum() < 0.25 * solid.sum()
    below = orbit_viewpoints((-60.0, 45.0), 2.5)  # cameras that look into the opening
    assert (carve_seen_space(shell * opaque, -BOUND, H, below) & hollow).sum() < 0.5 * hollow.sum()
    torus = torus_occupancy()
    carved = carve_seen_space(torus * opaque, -BOUND, H, above)
    assert not carved[N // 2, N // 2, N // 2]  # the hole is seen from above
    assert (torus & ~carved).sum() == 0 and (carved & ~torus).sum() < 0.35 * torus.sum()
    cube = cube_occupancy()
    carved = carve_seen_space(cube * opaque, -BOUND, H, above)
    assert (cube & ~carved).sum() == 0 and (carved & ~cube).sum() < 0.2 * cube.sum()


def test_carving_by_vote_keeps_a_shell_with_pinholes_solid_and_a_torus_hole_open():
    """A cube shell with a pinhole (radius 0.1) through the middle of each side face: with one vote each camera
    aligned with a pinhole carves a tunnel into the cube (27% of the inside); with 8 of the 96 cameras needed the
    inside stays, while the space a torus really leaves open is still seen empty from enough directions. The price:
    space near the surface that few cameras see is kept (the torus's inner rim, the wedge under a flat base)."""
    from dreamstill.backend.mesh.voxels import carve_seen_space, orbit_viewpoints

    opaque, cameras = 60.0, orbit_viewpoints((-10.0, 45.0), 2.5)
    p = grid_points()
    cube = cube_occupancy()
    inside = np.abs(p).max(-1) <= 0.42 - 0.07
    pinholes = (np.hypot(p[..., 1], p[..., 2]) <= 0.1) | (np.hypot(p[..., 0], p[..., 2]) <= 0.1)
    shell = cube & ~inside & ~pinholes
    one_vote = carve_seen_space(shell * opaque, -BOUND, H, cameras)
    votes = carve_seen_space(shell * opaque, -BOUND, H, cameras, min_views=8)
    assert (inside & ~one_vote).sum() > 0.2 * inside.sum()  # tunnels through the inside
    assert (inside & ~votes).sum() == 0 and (votes & ~cube).sum() < 0.3 * cube.sum()
    torus = torus_occupancy()
    carved = carve_seen_space(torus * opaque, -BOUND, H, cameras, min_views=8)
    assert not carved[N // 2, N // 2, N // 2] and (torus & ~carved).sum() == 0
    assert (carved & ~torus).sum() < 0.6 * torus.sum()
    with pytest.raises(ValueError, match="min_views"):
        carve_seen_space(torus * opaque, -BOUND, H, cameras, min_views=0)


def test_votes_never_join_the_parts_one_vote_keeps_apart():
    """Two balls 0.2 apart and a slab of extra solid that bridges them (what votes add where few cameras see the
    gap): without_joins cuts the bridge where the two parts' nearest regions meet and keeps every core voxel."""
    from scipy import ndimage

    from dreamstill.backend.mesh.voxels import without_joins

    p = grid_points()
    core = (np.linalg.norm(p - [0, -0.4, 0], axis=-1) <= 0.3) | (np.linalg.norm(p - [0, 0.4, 0], axis=-1) <= 0.3)
    bridge = (np.abs(p[..., 1]) <= 0.2) & (np.hypot(p[..., 0], p[..., 2]) <= 0.15)
    solid = core | bridge
    parts = lambda occ: ndimage.label(occ, np.ones((3, 3, 3)))[1]  # noqa: E731
    assert parts(solid) == 1
    cut = without_joins(solid, core, 2)
    assert parts(cut) == 2 and (core & ~cut).sum() == 0
    assert (bridge & ~cut).sum() < 0.2 * bridge.sum()  # a seam two voxels wide, the rest of the bridge kept
    assert (without_joins(solid, core, 1) == solid).all()


def test_a_fog_that_renders_opaque_becomes_solid():
    from dreamstill.backend.mesh.voxels import carve_seen_space, orbit_viewpoints

    radius = np.linalg.norm(grid_points(), axis=-1)
    fog = (radius <= 0.5) * 4.0  # opacity 1 - exp(-4 s) after s of it: 0.2 at s = 0.056, 0.98 through the middle
    cameras = orbit_viewpoints((-10.0, 45.0), 2.5)
    carved = carve_seen_space(fog, -BOUND, H, cameras, opacity=0.2)
    assert (carved & (radius > 0.5)).sum() < 0.05 * (radius <= 0.5).sum()
    inner = radius <= 0.5 - 0.056 - 2 * H  # the depth where the rays reach 0.2, less the margins
    assert (inner & ~carved).sum() < 0.05 * inner.sum()
    assert not carve_seen_space(fog / 10, -BOUND, H, cameras, opacity=0.2).any()  # 0.33 at most: seen through


def test_orbit_viewpoints_cover_the_ranges_at_the_distance():
    from dreamstill.backend.mesh.voxels import orbit_viewpoints

    vp = orbit_viewpoints((-10.0, 45.0), 2.5, (-180.0, 180.0), elevations=4, azimuths=8)
    assert vp.shape == (32, 3)
    np.testing.assert_allclose(np.linalg.norm(vp, axis=1), 2.5, rtol=1e-6)
    elevation = np.degrees(np.arcsin(vp[:, 2] / 2.5))
    np.testing.assert_allclose(sorted(set(np.round(elevation, 3))), [-10.0, 8.333, 26.667, 45.0], atol=1e-3)
    half = orbit_viewpoints((0.0, 0.0), 1.0, (0.0, 90.0), elevations=1, azimuths=3)
    np.testing.assert_allclose(half, [[1, 0, 0], [np.sqrt(0.5), np.sqrt(0.5), 0], [0, 1, 0]], atol=1e-6)
