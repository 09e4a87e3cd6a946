"""Distillation on a given mesh (tiny prior, small grids): texture mode keeps the input's geometry exactly and
changes only its texture; refine mode's surface moves less with a higher keep_shape; checkpoints know their mesh."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dreamstill.backend.engine.texture import MeshAssetOptimizer, pull_weight
from dreamstill.backend.fields.sdf_init import near_surface_points


def fitted(spec, mesh, prior, config) -> MeshAssetOptimizer:
    optimizer = MeshAssetOptimizer(spec, mesh, prior=prior, config=config)
    steps = list(optimizer.fit())
    assert [s for s, _, _ in steps] == list(range(1, config.fit.fit_steps + 1)) and optimizer.fitted
    return optimizer


def geometry(optimizer) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in optimizer.field.geometry_parameters()])


def test_texture_keeps_the_input_geometry_exactly_and_changes_only_the_texture(
    tiny_spec, tiny_prior, uv_box, fast_mesh_stage
):
    mesh = uv_box()
    spec = tiny_spec(mode="texture", steps=3, texture_size=32)
    optimizer = fitted(spec, mesh, tiny_prior, fast_mesh_stage)
    assert optimizer.mesh_phase_names(32, None) == ["bake"]  # it has UVs: nothing to unwrap
    before, frozen = optimizer.to_mesh(0, 32), geometry(optimizer)
    list(optimizer.run())
    after = optimizer.to_mesh(0, 32)
    assert optimizer.step == 3 and torch.equal(geometry(optimizer), frozen)
    for result in (before, after):
        np.testing.assert_array_equal(result.vertices[result.faces], mesh.vertices[mesh.faces])  # same triangles
        np.testing.assert_array_equal(result.uvs[result.faces], mesh.uvs)  # in the mesh's own UVs
    assert len(after.vertices) == 24  # 8 corners, each on 3 sides = 3 UV islands: only seam copies are new
    assert not np.array_equal(before.texture, after.texture)
    plain = optimizer.to_mesh(0, 0)  # no texture: vertex colours at the very input vertices
    np.testing.assert_array_equal(plain.vertices, mesh.vertices)
    assert plain.vertex_colors.shape == (8, 3) and plain.uvs is None


def test_texture_without_uvs_unwraps_once_and_keeps_the_triangles(tiny_spec, tiny_prior, uv_box, fast_mesh_stage):
    pytest.importorskip("xatlas")
    mesh = uv_box(with_uvs=False)
    optimizer = fitted(tiny_spec(mode="texture", steps=1), mesh, tiny_prior, fast_mesh_stage)
    assert optimizer.mesh_phase_names(32, None) == ["unwrap", "bake"]
    phases, result = [], None
    generator = optimizer.mesh_phases(0, 32)
    try:
        while True:
            phases.append(next(generator))
    except StopIteration as stop:
        result = stop.value
    assert phases == ["unwrap", "bake"] and optimizer.mesh_phase_names(32, None) == ["bake"]
    np.testing.assert_array_equal(result.vertices[result.faces], mesh.vertices[mesh.faces])
    assert ((result.uvs >= 0) & (result.uvs <= 1)).all() and result.texture.shape == (32, 32, 3)


def surface_moved(optimizer) -> float:
    """Mean |d_theta - d_0| at 4096 points near the mesh's surface."""
    x = near_surface_points(optimizer.grid, 4096, torch.Generator().manual_seed(0))
    with torch.no_grad():
        return float((optimizer.field.sdf(x) - optimizer.grid.sample(x)).abs().mean())


def test_refine_moves_the_surface_less_with_a_higher_keep_shape(tiny_spec, tiny_prior, uv_box, fast_mesh_stage):
    """A refine job whose distillation is replaced by a steady outward push (-0.1 E[d] near the surface, the same
    force for every run): its eikonal term and pull toward the mesh's shape hold the surface against it, the more
    the higher keep_shape. 12 steps at a fast geometry rate (3e-3) from the same fit, without the normal smoothness
    term (which rounds the box's edges whatever keep_shape is)."""
    from dataclasses import replace

    moved = {}
    config = replace(fast_mesh_stage, geometry_lr=3e-3, normal_smoothness_weight=0.0)
    for keep in (0.0, 0.5):
        spec = tiny_spec(mode="refine", steps=12, keep_shape=keep, batch_size=1, resolution=16)
        optimizer = fitted(spec, uv_box(), tiny_prior, config)
        x = near_surface_points(optimizer.grid, 1024, torch.Generator().manual_seed(1))
        optimizer.distill.loss = lambda *args, **kwargs: -0.1 * optimizer.field.sdf(x).mean()
        start = surface_moved(optimizer)
        list(optimizer.run())
        moved[keep] = surface_moved(optimizer) - start
    assert moved[0.0] > 0.02 and abs(moved[0.5]) < 0.1 * moved[0.0], moved


def test_refine_regularizers_follow_keep_shape_and_the_smoothness_weight(
    tiny_spec, tiny_prior, uv_box, fast_mesh_stage
):
    from dataclasses import replace

    def names(keep, smooth):
        spec = tiny_spec(mode="refine", steps=1, keep_shape=keep)
        config = replace(fast_mesh_stage, normal_smoothness_weight=smooth)
        return [
            type(term).__name__ for term in MeshAssetOptimizer(spec, uv_box(), tiny_prior, config=config).regularizers
        ]

    assert names(0.5, 2000.0) == ["Eikonal", "ShapePull", "NormalSmoothness"]
    assert names(0.0, 0.0) == ["Eikonal"]
    assert names(0.0, 2000.0) == ["Eikonal", "NormalSmoothness"]


def test_refine_meshes_its_surface_in_the_inputs_frame(tiny_spec, tiny_prior, uv_box, fast_mesh_stage):
    mesh = uv_box()
    optimizer = fitted(tiny_spec(mode="refine", steps=1), mesh, tiny_prior, fast_mesh_stage)
    assert optimizer.mesh_phase_names(0, 100) == ["mesh", "decimate"]
    result = optimizer.to_mesh(32, 0, 100)
    assert result.num_faces <= 110 and result.vertex_colors is not None
    lo, hi = result.vertices.min(axis=0), result.vertices.max(axis=0)  # the 2 x 3 x 4 box at (10, -5, 2)
    np.testing.assert_allclose((lo + hi) / 2, [10.0, -5.0, 2.0], atol=0.3)
    np.testing.assert_allclose(hi - lo, [2.0, 3.0, 4.0], atol=0.5)


def test_pull_weight_closed_form():
    assert pull_weight(0.0, 1000.0) == 0.0
    assert pull_weight(0.5, 1000.0) == pytest.approx(1000.0 * 0.5 / 0.51)
    assert pull_weight(1.0, 1000.0) == pytest.approx(1e5)


def test_checkpoints_know_their_mesh_and_resume_fitted(tiny_spec, tiny_prior, uv_box, fast_mesh_stage, tmp_path):
    spec = tiny_spec(mode="texture", steps=2)
    optimizer = fitted(spec, uv_box(), tiny_prior, fast_mesh_stage)
    list(optimizer.run())
    optimizer.save_checkpoint(tmp_path / "ckpt.pt")
    resumed = MeshAssetOptimizer(spec, uv_box(), prior=tiny_prior, config=fast_mesh_stage)
    with pytest.raises(RuntimeError, match="fit the field to the mesh first"):
        resumed.run()
    resumed.load_checkpoint(tmp_path / "ckpt.pt")
    assert resumed.fitted and resumed.step == 2 and torch.equal(geometry(resumed), geometry(optimizer))
    assert not any(p.requires_grad for p in resumed.field.geometry_parameters())  # texture mode: frozen again
    other = MeshAssetOptimizer(spec, uv_box(with_uvs=False), prior=tiny_prior, config=fast_mesh_stage)
    with pytest.raises(ValueError, match="different input mesh"):
        other.load_checkpoint(tmp_path / "ckpt.pt")
