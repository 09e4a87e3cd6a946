"""Surface-stage prototype: density -> SDF -> geometry -> texture -> clean mesh, end to end on the tiny prior."""

from __future__ import annotations

import torch

from dreamstill.backend.engine.surface import SurfaceStageConfig, objects_in_prompt, run_surface_prototype
from dreamstill.backend.fields import HashGridConfig, SDFFieldConfig, SDFInitConfig
from dreamstill.backend.mesh import load_mesh
from dreamstill.backend.mesh.cleanup import topology, weld
from dreamstill.protocol import JobSpec

SMALL = HashGridConfig(n_levels=4, log2_hashmap_size=12, base_resolution=4, max_resolution=32, backend="torch")


def tiny_config(**overrides) -> SurfaceStageConfig:
    base = dict(
        num_samples=16,
        num_importance=0,
        eikonal_points=256,
        smoothness_points=64,
        init=SDFInitConfig(resolution=24, fit_steps=10, fit_points=512),
        sdf=SDFFieldConfig(grid=SMALL, albedo_grid=SMALL, hidden_dim=16),
        mesh_resolution=32,
        max_faces=500,
        texture_size=32,
    )
    base.update(overrides)
    return SurfaceStageConfig(**base)


def test_objects_in_prompt_counts_compositions():
    assert objects_in_prompt("a red cube") == 1
    assert objects_in_prompt("a red cube next to a blue torus") == 2
    assert objects_in_prompt("a green cone on top of a yellow sphere") == 2
    assert objects_in_prompt("a photo of a hamburger") == 1


def test_prototype_writes_a_watertight_light_asset_and_freezes_geometry_for_texture(tiny_prior, tmp_path):
    spec = JobSpec(prompt="a red cube", prior="tiny", resolution=32, batch_size=1, seed=1)
    seen = []
    report = run_surface_prototype(
        spec,
        tmp_path / "asset.glb",
        density_steps=2,
        geometry_steps=2,
        texture_steps=2,
        config=tiny_config(),
        prior=tiny_prior,
        progress=lambda stage, step, total, loss: seen.append((stage, step, total)),
        density_checkpoint=tmp_path / "density.pt",
    )
    assert [s for s in dict.fromkeys(stage for stage, _, _ in seen)] == ["density", "init", "geometry", "texture"]
    assert ("geometry", 2, 2) in seen and ("texture", 2, 2) in seen
    assert {"density", "init", "geometry", "texture", "mesh", "total", "total_cpu", "geometry_cpu"} <= set(
        report["seconds"]
    )
    final = report["mesh"]["final"]
    assert final["watertight"] and final["euler"] == 2 and final["faces"] <= 500
    mesh = load_mesh(report["files"][0])
    assert mesh.texture is not None and mesh.texture.shape == (32, 32, 3)
    assert topology(weld(mesh)).watertight  # the bake split vertices along seams only
    assert (tmp_path / "density.pt").exists()

    stage = report["stage"]
    geometry = [p.detach().clone() for p in stage.field.geometry_parameters()]
    albedo = [p.detach().clone() for p in stage.field.albedo_parameters()]
    stage.run_texture()
    assert all(torch.equal(a, p) for a, p in zip(geometry, stage.field.geometry_parameters()))
    assert any(not torch.equal(a, p) for a, p in zip(albedo, stage.field.albedo_parameters()))
