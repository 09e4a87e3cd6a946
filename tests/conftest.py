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
def exact_fp32_cuda():
    """CUDA's float32 without TF32 (cuDNN convolutions use TF32 by default, ~3 digits) while the test runs, so a float32
    run on the GPU is a float32 reference."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture
def tiny_spec():
    """A factory of small per-prompt JobSpecs on the tiny prior (4 steps at 32 px, 32^3 mesh, vertex colours, the
    density stage alone: pass surface=True, with ``small_surface``, for the surface stage)."""
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
            surface=False,
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


@pytest.fixture
def small_surface(monkeypatch):
    """The engine's surface stage at test size (a small SDF field, a coarse, short SDF init, few regularizer points),
    for every AssetOptimizer made while the test runs (run_job included). Returns that SurfaceConfig."""
    from dreamstill.backend.engine import optimize
    from dreamstill.backend.engine.surface import SurfaceConfig
    from dreamstill.backend.fields import HashGridConfig, SDFFieldConfig, SDFInitConfig

    grid = HashGridConfig(n_levels=4, log2_hashmap_size=12, base_resolution=4, max_resolution=32, backend="torch")
    config = SurfaceConfig(
        num_samples=16,
        num_importance=8,
        eikonal_points=256,
        smoothness_points=64,
        output_samples=16,
        init=SDFInitConfig(resolution=24, fit_steps=10, fit_points=512, close_radius=0.12),
        sdf=SDFFieldConfig(grid=grid, albedo_grid=grid, hidden_dim=16),
    )

    class SmallDefaults(optimize.EngineDefaults):
        def __init__(self, **kwargs):
            super().__init__(**{"surface": config, **kwargs})

    monkeypatch.setattr(optimize, "EngineDefaults", SmallDefaults)
    return config


@pytest.fixture
def glb_attributes():
    """A reader of a .glb's first primitive: (its attributes {name: accessor}, {name: (N, 3) float32 array} of its
    VEC3 float attributes, e.g. POSITION and NORMAL)."""
    import json
    import struct

    import numpy as np

    def read(path):
        data = open(path, "rb").read()
        n = struct.unpack("<I", data[12:16])[0]
        gltf = json.loads(data[20 : 20 + n])
        blob_start = 20 + n + 8
        attrs = gltf["meshes"][0]["primitives"][0]["attributes"]
        arrays = {}
        for name, index in attrs.items():
            acc = gltf["accessors"][index]
            if acc["type"] != "VEC3" or acc["componentType"] != 5126:
                continue
            view = gltf["bufferViews"][acc["bufferView"]]
            start = blob_start + view.get("byteOffset", 0) + acc.get("byteOffset", 0)
            arrays[name] = np.frombuffer(data, np.float32, acc["count"] * 3, start).reshape(-1, 3)
        return attrs, arrays

    return read


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


@pytest.fixture(scope="session")
def tiny_sdf_generator(tiny_prior, tmp_path_factory) -> str:
    """The generator.pt of a tiny triplane SDF generator (``--arch-option geometry=sdf``, the tiny prior, a corpus
    of "a red cube" and "a blue sphere") whose weights are moved off the ball: a lumpy solid, maybe with islands."""
    from dreamstill.backend.generators.config import GeneratorTrainConfig
    from dreamstill.backend.generators.train import GeneratorTrainer

    folder = tmp_path_factory.mktemp("sdf_generator")
    corpus = folder / "prompts.txt"
    corpus.write_text("a red cube\na blue sphere\n")
    config = GeneratorTrainConfig(
        arch="triplane", corpus=str(corpus), prior="tiny", steps=1, arch_options={"geometry": "sdf"}, num_samples=8
    )
    trainer = GeneratorTrainer(config, folder / "gen", prior=tiny_prior)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in trainer.generator.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return str(trainer.save())
