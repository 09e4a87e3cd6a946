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
