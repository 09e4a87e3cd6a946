"""Mesh rasterization for contact sheets: the projection is the inverse of Cameras.rays, coverage and depth order
are right, and the two shadings draw what they say."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dreamstill.backend.mesh import Mesh
from dreamstill.backend.render.cameras import Cameras, orbit_cameras
from dreamstill.backend.render.raster import draw_mesh, project, rasterize


def one_camera(elevation=20.0, azimuth=30.0, distance=3.0, fov=40.0) -> Cameras:
    t = lambda v: torch.tensor([float(v)])  # noqa: E731
    return Cameras(t(elevation), t(azimuth), t(distance), t(fov))


def test_a_point_on_a_pixels_ray_projects_to_that_pixels_centre():
    cams = one_camera()
    origins, dirs = cams.rays(32, 32)
    points = origins[0, [3, 17, 30], [5, 16, 2]] + 2.5 * dirs[0, [3, 17, 30], [5, 16, 2]]
    xy, depth = project(points, cams, 0, 32)
    torch.testing.assert_close(xy, torch.tensor([[5.5, 3.5], [16.5, 17.5], [2.5, 30.5]]), atol=1e-4, rtol=0)
    assert (depth > 0).all()


def square(z: float, half: float):
    """Two triangles of a square in the plane x = z facing +x (toward a camera at azimuth 0, elevation 0)."""
    v = torch.tensor([[z, -half, -half], [z, half, -half], [z, half, half], [z, -half, half]])
    return v, torch.tensor([[0, 1, 2], [0, 2, 3]])


def test_coverage_is_the_projected_area_and_the_weights_sum_to_one():
    cams = one_camera(elevation=0.0, azimuth=0.0, distance=3.0, fov=60.0)
    v, f = square(0.0, 0.5)
    frags = rasterize(v, f, cams, 0, 64)
    focal = 32 / math.tan(math.radians(30))
    expected = (2 * 0.5 * focal / 3.0) ** 2  # the square's side on screen, squared
    assert abs(int((frags.face >= 0).sum()) - expected) <= 4 * 2 * 0.5 * focal / 3.0  # within the border pixels
    w = frags.weights[frags.face >= 0]
    torch.testing.assert_close(w.sum(-1), torch.ones(len(w)))
    assert (w >= -1e-6).all()
    back = rasterize(v, f[:, [0, 2, 1]], cams, 0, 64)  # the same square facing away is culled
    assert (back.face < 0).all()


def test_the_nearest_triangle_wins_wherever_it_covers():
    cams = one_camera(elevation=0.0, azimuth=0.0, distance=3.0, fov=60.0)
    far_v, far_f = square(0.0, 0.6)
    near_v, near_f = square(0.5, 0.2)
    v = torch.cat([far_v, near_v])
    f = torch.cat([far_f, near_f + 4])
    frags = rasterize(v, f, cams, 0, 64)
    centre = frags.face[28:36, 28:36]
    assert (centre >= 2).all()  # the near square's faces
    assert 0 <= frags.face[23, 32] < 2  # only the far square up there (the near one spans rows 27..36)


def ico_sphere(colors=None) -> Mesh:
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=3, radius=0.6)
    return Mesh(s.vertices, s.faces, vertex_colors=colors if colors is None else np.tile(colors, (len(s.vertices), 1)))


def test_geometry_is_grey_lit_texture_shows_the_colours_background_white():
    cams = orbit_cameras(2, elevation=20.0)
    red = ico_sphere(np.array([[255, 0, 0]], np.uint8))
    geo, tex = draw_mesh(red, cams, 48, "geometry"), draw_mesh(red, cams, 48, "texture")
    assert geo.shape == tex.shape == (2, 48, 48, 3)
    assert torch.equal(geo[:, 0, 0], torch.ones(2, 3))  # the corners miss the sphere
    centre_geo, centre_tex = geo[:, 24, 24], tex[:, 24, 24]
    assert torch.allclose(centre_geo[:, 0], centre_geo[:, 1]) and (centre_geo <= 0.8 + 1e-6).all()
    assert (centre_geo > 0.25 * 0.8).all()  # lit, not ambient only
    assert (centre_tex[:, 0] > 0.2).all() and (centre_tex[:, 1:] == 0).all()  # red albedo times the light
    with pytest.raises(ValueError, match="geometry"):
        draw_mesh(red, cams, 16, "normal")
