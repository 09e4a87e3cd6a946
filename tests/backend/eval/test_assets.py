"""The benchmark's assets behind the engine's Asset interface: ground truth, saved, and the one mesh call."""

import numpy as np
import pytest
import torch

from dreamstill.backend.eval import assets as A
from dreamstill.backend.eval.config import BenchmarkConfig
from dreamstill.backend.eval.metrics import evaluation_cameras
from dreamstill.backend.mesh import Mesh, decimation_available
from dreamstill.backend.priors.builtin import world as W


def test_ground_truth_asset_has_the_asset_interface():
    asset = A.GroundTruthAsset("a red cube")
    assert asset.device == torch.device("cpu") and asset.warnings == []
    out = asset.render(evaluation_cameras(2, (20.0,)), 16, 16)
    assert out.rgb.shape == (2, 16, 16, 3) and out.opacity.shape == (2, 16, 16, 1)
    assert 0.0 < out.opacity.mean().item() < 1.0


def test_ground_truth_mesh_is_the_true_solid_wound_outward_and_coloured():
    mesh = A.GroundTruthAsset("a red cube").to_mesh(48)
    assert isinstance(mesh, Mesh)
    tri = mesh.vertices[mesh.faces].astype(np.float64)
    signed_volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
    # positive: faces wound outward; a little short of 0.84^3, marching cubes bevels the edges
    assert signed_volume == pytest.approx((2 * W.CUBE_HALF) ** 3, rel=1e-2)
    red = np.round(np.array(W.COLOURS["red"]) * 255)
    assert (mesh.vertex_colors == red).all()


@pytest.mark.skipif(not decimation_available(), reason="fast-simplification is not installed")
def test_ground_truth_mesh_keeps_a_face_budget():
    full = A.GroundTruthAsset("a blue sphere").to_mesh(48)
    light = A.GroundTruthAsset("a blue sphere").to_mesh(48, max_faces=500)
    assert full.num_faces > 500 >= light.num_faces > 400


def _record(mesh, renders):
    scored = {"mesh": mesh, "renders": renders}
    return A.asset_record("sds", "a red cube", 3, BenchmarkConfig(), scored, 2.5, 0.1)


def test_saved_asset_round_trips_renders_and_mesh():
    mesh = A.GroundTruthAsset("a red cube").to_mesh(32)
    renders = torch.rand(4, 3, 8, 8)
    record = _record(mesh, renders)
    assert (record["method"], record["seed"], record["seconds_per_asset"]) == ("sds", 3, 2.5)
    saved = A.SavedAsset(record)
    again = saved.to_mesh(64)
    assert np.array_equal(again.vertices, mesh.vertices) and np.array_equal(again.faces, mesh.faces)
    out = saved.render(evaluation_cameras(4, (0.0,)), 8, 8)
    assert torch.allclose(out.rgb.permute(0, 3, 1, 2), renders, atol=0.5 / 255 + 1e-6)
    with pytest.raises(ValueError, match="rescore with the run's cameras"):
        saved.render(evaluation_cameras(2, (0.0,)), 8, 8)
    with pytest.raises(ValueError, match="kept no mesh"):
        A.SavedAsset(_record(None, renders)).to_mesh(64)


def test_eval_assets_are_assets():
    """Eval's ground-truth and saved assets satisfy the engine's Asset protocol (render, to_mesh, device, warnings)."""
    from dreamstill.backend.engine.asset import Asset

    assert isinstance(A.GroundTruthAsset("a red cube"), Asset)
