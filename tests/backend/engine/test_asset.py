"""FieldAsset: an analytic ball seen through the Asset protocol (renders, mesh by phases, warnings)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dreamstill.backend.engine.asset import Asset, FieldAsset
from dreamstill.backend.engine.meshing import run_phases
from dreamstill.backend.render import RenderSettings, orbit_cameras


class Ball(torch.nn.Module):
    """density 50 inside radius 0.5 (smooth edge), albedo red on +x and blue on -x."""

    bound = 1.0

    def density(self, x):
        return 50.0 * torch.sigmoid((0.5 - x.norm(dim=-1)) * 60.0)

    def forward(self, x):
        red = (x[:, :1] > 0).to(x.dtype)
        return self.density(x), torch.cat([red, torch.zeros_like(red), 1 - red], -1)


def ball_asset() -> FieldAsset:
    return FieldAsset(Ball(), (1.0, 1.0, 1.0), "cpu", RenderSettings(num_samples=64))


def test_a_field_asset_is_an_asset_and_renders_without_gradients():
    asset = ball_asset()
    assert isinstance(asset, Asset) and asset.device == torch.device("cpu")
    out = asset.render(orbit_cameras(2), 9, 9)
    assert not out.rgb.requires_grad and out.normal is None
    assert out.opacity[0, 4, 4, 0] > 0.99 and out.opacity[0, 0, 0, 0] < 0.01  # ball in the middle, corners empty
    assert asset.render(orbit_cameras(1), 5, 5, shading="lambertian").normal is not None


def test_mesh_by_phases_is_to_mesh_and_the_ball_has_its_radius():
    asset = ball_asset()
    assert asset.mesh_phase_names(0, None) == ["mesh"]
    phases = asset.mesh_phases(48)
    assert next(phases) == "mesh"
    mesh = run_phases(phases)
    again = asset.to_mesh(48)
    np.testing.assert_array_equal(mesh.vertices, again.vertices)
    radius = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(float(np.median(radius)) - 0.5) < 2.0 / 47  # within a cell of the true radius
    red = mesh.vertex_colors[:, 0] > 128
    np.testing.assert_array_equal(red, mesh.vertices[:, 0] > 0)  # vertex colours sample the albedo where they are


def test_an_empty_field_raises_when_meshed():
    from dreamstill.backend.mesh import EmptyFieldError

    class Empty(Ball):
        def density(self, x):
            return torch.zeros(len(x))

    with pytest.raises(EmptyFieldError):
        FieldAsset(Empty(), None, "cpu", RenderSettings()).to_mesh(32)
