"""Shared fixtures. Tests never touch the network: HF_HUB_OFFLINE is set before anything imports huggingface_hub.

torch runs with ONE intra-op thread in tests (override: DREAMSTILL_TEST_THREADS=N). On the shared 2-core machine
several test processes run at once, and OpenMP threads spinning against each other made a 3-call tiny-UNet test
take 33 s with 2 threads against 0.9 s with 1 (load average ~12).
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("DREAMSTILL_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def tiny_prior():
    """The tiny random prior (pixel space, 3x32x32, epsilon, CPU fp32), built in memory with seed 0."""
    from dreamstill.backend.priors.tiny import build_tiny_prior

    return build_tiny_prior(seed=0)


@pytest.fixture(scope="session")
def tiny_prior_dir(tmp_path_factory):
    """A folder in diffusers layout holding the tiny prior of seed 0 (same weights as ``tiny_prior``)."""
    from dreamstill.backend.priors.configs import get_stack
    from dreamstill.backend.priors.tiny import build_components, save_components

    folder = tmp_path_factory.mktemp("tiny_prior")
    save_components(build_components(get_stack("tiny"), seed=0), folder)
    return folder


@pytest.fixture
def tiny_spec():
    """A factory of small per-prompt JobSpecs on the tiny prior (4 steps at 32 px, 32^3 mesh, vertex colours)."""
    from dreamstill.protocol import JobSpec

    def make(**overrides):
        base = dict(
            prompt="a red cube",
            prior="tiny",
            steps=4,
            resolution=32,
            batch_size=2,
            mesh_resolution=32,
            texture_size=0,
            preview_every=2,
            seed=3,
        )
        base.update(overrides)
        return JobSpec(**base)

    return make


@pytest.fixture(scope="session")
def fast_mesh_stage():
    """A MeshStageConfig for texture / refine tests: 32^3 distance grid, 40 fit steps, small hash grids."""
    from dreamstill.backend.engine.texture import MeshStageConfig
    from dreamstill.backend.fields.hashgrid import HashGridConfig
    from dreamstill.backend.fields.mesh_sdf import MeshSDFConfig
    from dreamstill.backend.fields.sdf import SDFFieldConfig
    from dreamstill.backend.fields.sdf_init import SDFInitConfig

    small = HashGridConfig(n_levels=4, max_resolution=32, log2_hashmap_size=12)
    return MeshStageConfig(
        grid=MeshSDFConfig(resolution=32),
        fit=SDFInitConfig(fit_steps=40, fit_points=1024),
        sdf=SDFFieldConfig(grid=small, albedo_grid=small, beta=0.02, occupancy_resolution=16),
        num_samples=16,
        num_importance=8,
        output_samples=16,
        output_importance=8,
        regularizer_points=512,
        live_texture_size=32,
    )


@pytest.fixture(scope="session")
def uv_box():
    """A factory of a 2 x 3 x 4 box at (10, -5, 2) in its own frame, as an InputMesh: 8 vertices, 12 triangles, and
    (``with_uvs``) each side projected onto its plane into one cell of a 3 x 2 UV grid (4 distinct UVs a side)."""
    import numpy as np
    import trimesh

    from dreamstill.protocol import InputMesh

    def make(with_uvs: bool = True) -> InputMesh:
        box = trimesh.creation.box((2.0, 3.0, 4.0))
        box.apply_translation([10.0, -5.0, 2.0])
        vertices, faces = np.asarray(box.vertices), np.asarray(box.faces)
        uvs = None
        if with_uvs:
            normal = np.asarray(box.face_normals)
            side = np.argmax(np.abs(normal), axis=1) * 2 + (normal.max(axis=1) > 0.5)  # 0..5
            lo, hi = vertices.min(axis=0), vertices.max(axis=0)
            uvs = np.zeros((len(faces), 3, 2), np.float32)
            for j, face in enumerate(faces):
                across = [a for a in range(3) if a != side[j] // 2]
                local = (vertices[face][:, across] - lo[across]) / (hi - lo)[across]  # (3, 2) in 0..1
                uvs[j] = (np.array([side[j] % 3, side[j] // 3]) + 0.1 + 0.8 * local) / np.array([3.0, 2.0])
        return InputMesh(vertices, faces, uvs)

    return make


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory):
    """A running server whose worker runs the fake runner (server.testing), events forwarded without delay."""
    from dreamstill.backend.server import Server, ServerConfig
    from dreamstill.backend.server.testing import FAKE_RUNNER

    config = ServerConfig(progress_interval_s=0, preview_interval_s=0)
    srv = Server("tcp://127.0.0.1:*", store_dir=tmp_path_factory.mktemp("store"), runner=FAKE_RUNNER, config=config)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
