"""SDF initialisation from a density field: the signed distance grid, its sampling, the fit."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from dreamstill.backend.fields import DensityField, HashGridConfig, SDFFieldConfig
from dreamstill.backend.fields.sdf_init import SDFGrid, SDFInitConfig, sdf_field_from_density, sdf_grid_from_density
from dreamstill.backend.mesh.types import EmptyFieldError

SMALL = HashGridConfig(n_levels=4, log2_hashmap_size=12, base_resolution=4, max_resolution=32, backend="torch")


def test_sdf_grid_sampling_is_trilinear():
    values = np.arange(27, dtype=np.float32).reshape(3, 3, 3)  # value = 9 i + 3 j + k
    grid = SDFGrid(values, lo=-1.0, spacing=1.0)
    x = torch.tensor([[-1.0, -1.0, -1.0], [0.5, -0.5, 0.25], [1.0, 1.0, 1.0]])
    # world (x, y, z) = lo + (i, j, k): index (1.5, 0.5, 1.25) -> 13.5 + 1.5 + 1.25
    assert torch.allclose(grid.sample(x), torch.tensor([0.0, 16.25, 26.0]))


class BallDensity(DensityField):
    """A density field that is exactly a solid ball of radius 0.5 (density 50 inside) with a grey albedo."""

    def forward(self, x):
        density = 50.0 * (x.norm(dim=-1) <= 0.5).float()
        return density, torch.full((x.shape[0], 3), 0.25)


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
    for share in (0.0, 1.5):
        with pytest.raises(ValueError, match="carve_view_share"):
            SDFInitConfig(carve_view_share=share).validate()


def frame_density(x: torch.Tensor) -> torch.Tensor:
    """A cube shell (half-extent 0.42, walls 0.07) with a square window (half-width 0.22) through each face: a lattice
    of edges, what a short density stage leaves of an object whose faces are a fog too faint to carve against."""
    a = x.abs()
    shell = (a.max(-1).values <= 0.42) & (a.max(-1).values >= 0.35)
    sorted_a = a.sort(-1).values  # the window of the face a point is on: its two smaller coordinates inside 0.22
    window = sorted_a[:, 1] <= 0.22
    return 60.0 * (shell & ~window).float()


def test_the_votes_double_while_the_solid_is_a_lattice():
    """One vote (or 8 of 96) carves the frame's inside through its windows, a genus-5 lattice; with
    max_genus_per_part 1 the votes double until the solid has at most one handle, and the inside is solid again."""
    from dreamstill.backend.fields.sdf_init import genus_per_part
    from dreamstill.backend.mesh.voxels import orbit_viewpoints

    cameras = orbit_viewpoints((-10.0, 45.0), 2.5)
    base = SDFInitConfig(resolution=48, close_radius=0.0)
    lattice = sdf_grid_from_density(frame_density, 1.0, replace(base, max_genus_per_part=None), cameras)
    capped = sdf_grid_from_density(frame_density, 1.0, base, cameras)
    genus = lambda grid: genus_per_part(grid.values < 0, grid.spacing)  # noqa: E731
    assert genus(lattice) >= 4 and genus(capped) <= 1
    centre = torch.zeros(1, 3)
    assert lattice.sample(centre).item() > 0 > capped.sample(centre).item()
    with pytest.raises(ValueError, match="max_genus_per_part"):
        SDFInitConfig(max_genus_per_part=-1).validate()
