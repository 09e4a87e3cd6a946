"""Instant assets of SDF generators mesh through the surface stage's SDF mesher: watertight, one part per object."""

import torch


def test_sdf_instant_job_mesh_is_watertight_and_one_part(tiny_sdf_generator, tmp_path):
    import trimesh
    from scipy import ndimage

    from dreamstill.backend.generators.instant import InstantAsset
    from dreamstill.backend.jobs import run_job
    from dreamstill.protocol import Done, JobSpec

    spec = JobSpec(
        prompt="a red cube",
        mode="instant",
        generator=str(tiny_sdf_generator),
        prior="tiny",
        mesh_resolution=32,
        texture_size=0,
    )
    asset = InstantAsset(spec)
    assert asset.sdf and asset.output_settings.num_importance > 0
    axis = torch.linspace(-1, 1, 32)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    with torch.no_grad():
        inside = (asset.field.sdf(grid) < 0).reshape(32, 32, 32).numpy()
    assert ndimage.label(inside)[1] > 1  # the raw solid has islands: the mesher's repair is what makes one part
    done = list(run_job(spec, tmp_path / "out"))[-1]
    assert isinstance(done, Done), done
    glb = next(f for f in done.files if f.endswith(".glb"))
    mesh = trimesh.load(glb).to_geometry()
    assert len(mesh.faces) > 0 and mesh.is_watertight
    assert len(mesh.split(only_watertight=False)) == 1
