"""SDF initialisation from a density field: voxel clean-up, signed distance, fit."""

import numpy as np
import pytest
import torch

from dreamstill.backend.fields import DensityField, HashGridConfig, SDFFieldConfig
from dreamstill.backend.fields.sdf_init import (
    SDFGrid,
    SDFInitConfig,
    ball_structure,
    close_small_features,
    fill_cavities,
    keep_largest_components,
    sdf_field_from_density,
    sdf_grid_from_density,
    signed_distance,
)
from dreamstill.backend.mesh.cleanup import marching_cubes_sdf, topology
from dreamstill.backend.mesh.types import EmptyFieldError

N = 64
BOUND = 1.0
H = 2 * BOUND / (N - 1)
SMALL = HashGridConfig(n_levels=4, log2_hashmap_size=12, base_resolution=4, max_resolution=32, backend="torch")


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


def test_sdf_grid_sampling_is_trilinear():
    values = np.arange(27, dtype=np.float32).reshape(3, 3, 3)  # value = 9 i + 3 j + k
    grid = SDFGrid(values, lo=-1.0, spacing=1.0)
    x = torch.tensor([[-1.0, -1.0, -1.0], [0.5, -0.5, 0.25], [1.0, 1.0, 1.0]])
    # world (x, y, z) = lo + (i, j, k): index (1.5, 0.5, 1.25) -> 13.5 + 1.5 + 1.25
    assert torch.allclose(grid.sample(x), torch.tensor([0.0, 16.25, 26.0]))


class BallDensity(DensityField):
    """A density field that is exactly a solid ball of radius 0.5 (sigma 50 inside) with a grey albedo."""

    def forward(self, x):
        sigma = 50.0 * (x.norm(dim=-1) <= 0.5).float()
        return sigma, torch.full((x.shape[0], 3), 0.25)


def test_sdf_field_from_a_ball_density_fits_the_ball_and_its_albedo():
    torch.manual_seed(0)
    density = BallDensity()
    cfg = SDFInitConfig(resolution=48, fit_steps=150, fit_points=2048)
    field, grid = sdf_field_from_density(
        density, SDFFieldConfig(grid=SMALL, albedo_grid=SMALL, hidden_dim=16), cfg, torch.Generator().manual_seed(0)
    )
    u = torch.nn.functional.normalize(torch.randn(100, 3, generator=torch.Generator().manual_seed(1)), dim=-1)
    h = 2.0 / 47
    with torch.no_grad():
        assert field.sdf(0.5 * u).abs().max().item() < 1.5 * h
        assert field.sdf(torch.zeros(1, 3)).item() == pytest.approx(-0.5, abs=2 * h)
        assert torch.allclose(field.albedo(0.5 * u), torch.tensor(0.25), atol=0.03)
    assert grid.values.shape == (48, 48, 48)


def test_empty_density_field_says_to_run_longer():
    class Empty(DensityField):
        def forward(self, x):
            return torch.zeros(x.shape[0]), torch.zeros(x.shape[0], 3)

    with pytest.raises(EmptyFieldError, match="density stage"):
        sdf_grid_from_density(Empty().density, 1.0, SDFInitConfig(resolution=16))
    with pytest.raises(ValueError, match="close_radius"):
        SDFInitConfig(close_radius=-1).validate()
