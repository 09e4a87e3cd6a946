"""The toy-world scorer: prompt labels, the likelihood/similarity maths, weights on disk, and the shipped weights
ranking ground-truth renders of their own prompt first."""

import math

import pytest
import torch

from dreamstill.backend.eval import scorer as S
from dreamstill.backend.eval.metrics import evaluation_cameras, r_at_1
from dreamstill.backend.priors.builtin import world as W
from dreamstill.backend.render.cameras import sample_cameras

SHIPPED = (S.WEIGHTS_DIR / "weights.safetensors").exists()


def test_prompt_targets_follow_the_grammar():
    t = S.prompt_targets(["a red cube", "an orange torus on top of a blue sphere", "a green cone next to a red cube"])
    nshape, ncol = len(W.SHAPES), len(W.COLOURS)
    colours = list(W.COLOURS)
    assert t[0].tolist() == [0, W.SHAPES.index("cube"), colours.index("red"), nshape, ncol]
    assert t[1].tolist() == [
        1,
        W.SHAPES.index("torus"),
        colours.index("orange"),
        W.SHAPES.index("sphere"),
        colours.index("blue"),
    ]
    assert t[2, 0].item() == 2  # "next to"
    with pytest.raises(ValueError, match="toy-world"):
        S.prompt_targets(["a photo of a cat"])


def test_score_is_the_geometric_mean_of_head_probabilities():
    torch.manual_seed(0)
    model = S.ToyScorer().eval()
    x = torch.rand(3, 3, 40, 40)  # any size: resized to 32
    cams = sample_cameras(3, torch.Generator().manual_seed(0))
    prompts = ["a red cube", "a blue sphere on top of a red cube"]
    ll = model.log_likelihood(x, prompts, cams)
    logits = model(x, cams)
    t = S.prompt_targets(prompts)
    manual = sum(logits[h].log_softmax(-1)[:, t[:, k]] for k, h in enumerate(S.HEADS))
    assert torch.allclose(ll, manual, atol=1e-5)
    s = model.score(x, prompts, cams)
    assert s.shape == (3, 2) and ((s > 0) & (s <= 1)).all()
    assert torch.allclose(s, (ll / 5).exp(), atol=1e-5)
    # without a camera the scorer still answers (camera features are zero, as in training's camera dropout)
    assert model.score(x, prompts).shape == (3, 2)
    with pytest.raises(ValueError, match="one \\(elevation"):
        model.score(x, prompts, cams.as_condition()[:2])


def test_next_to_pairs_are_read_in_image_order():
    rows = lambda az: torch.tensor([[10.0, a, 2.75, 45.0] for a in az])  # noqa: E731
    # the caption's first object sits at -Y: on the left seen from the front (azimuth 0), on the right from the back;
    # exactly side-on the object in front counts as the left one (at +90 degrees that is the second object)
    assert S.pair_swapped(rows([0.0, 60.0, -60.0, -90.0, 90.0, 120.0, 180.0])).tolist() == [
        False,
        False,
        False,
        False,
        True,
        True,
        True,
    ]
    t = S.prompt_targets(["a red cube next to a blue sphere", "a red cube on top of a blue sphere"])
    sw = S.swap_pairs(t)
    assert sw[0].tolist() == [t[0, 0].item()] + t[0, 3:5].tolist() + t[0, 1:3].tolist()
    assert torch.equal(sw[1], t[1])  # "on top of" has a fixed order: nothing to swap
    assert torch.equal(S.image_order_targets(t, rows([180.0, 180.0]))[0], sw[0])


def test_next_to_order_follows_the_camera_and_is_marginalised_without_one():
    torch.manual_seed(0)
    model = S.ToyScorer(S.ScorerConfig(camera=False)).eval()
    x = torch.rand(2, 3, 32, 32)
    ab, ba = "a red cube next to a blue sphere", "a blue sphere next to a red cube"
    front = torch.tensor([[10.0, 0.0, 2.75, 45.0]] * 2)
    back = torch.tensor([[10.0, 180.0, 2.75, 45.0]] * 2)
    # seen from the back, "A next to B" is what "B next to A" is from the front
    assert torch.allclose(model.log_likelihood(x, [ab], back), model.log_likelihood(x, [ba], front), atol=1e-5)
    none = model.log_likelihood(x, [ab, ba], None)
    assert torch.allclose(none[:, 0], none[:, 1], atol=1e-5)
    expected = torch.logaddexp(model.log_likelihood(x, [ab], front), model.log_likelihood(x, [ab], back)) - math.log(2)
    assert torch.allclose(none[:, :1], expected, atol=1e-5)


def test_weights_round_trip(tmp_path):
    torch.manual_seed(1)
    model = S.ToyScorer().eval()
    S.save_scorer(model, tmp_path, {"note": "test"})
    loaded = S.load_scorer(tmp_path)
    x = torch.rand(2, 3, 32, 32)
    # stored in float16: equal to the original up to fp16 rounding of the weights
    assert torch.allclose(
        loaded.score(x, ["a red cube", "a blue cone"]), model.score(x, ["a red cube", "a blue cone"]), atol=2e-2
    )
    with pytest.raises(FileNotFoundError, match="train-scorer"):
        S.load_scorer(tmp_path / "missing")


def test_augment_is_seeded_and_stays_in_range():
    x = torch.rand(4, 3, 32, 32)
    a = S.augment(x, torch.Generator().manual_seed(3))
    b = S.augment(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == x.shape
    assert a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, S.augment(x, torch.Generator().manual_seed(4)))


def test_training_separates_two_prompts_on_a_tiny_set():
    """A few steps on renders of two prompts are enough for the scorer to tell them apart."""
    prompts = ["a red sphere", "a blue cube"]
    g = torch.Generator().manual_seed(0)
    scenes = [W.parse_prompt(prompts[i % 2]) for i in range(64)]
    cams = sample_cameras(64, g)
    images = (W.render_scenes(scenes, cams, 32, W.RenderConfig(supersample=1, steps=24)) * 255).round().byte()
    targets = torch.tensor([S.scene_targets(s) for s in scenes])
    cfg = S.ScorerTrainConfig(
        epochs=8,
        batch_size=16,
        lr=3e-3,
        threads=0,
        warmup_steps=1,
        model=S.ScorerConfig(widths=(8, 16, 16), hidden=32, squeeze=8),
    )
    model = S.train_scorer(None, cfg, log=lambda s: None, data=(images, cams.as_condition(), targets))
    s = model.score(images[:8].float() / 255, prompts, cams.as_condition()[:8])
    assert (s.argmax(1) == torch.arange(8) % 2).float().mean() >= 0.75


@pytest.mark.skipif(not SHIPPED, reason="scorer weights not shipped yet")
def test_shipped_scorer_ranks_ground_truth_renders_first():
    scorer = S.load_scorer()
    prompts = [
        "a red cube",
        "a red cylinder",
        "a yellow cone",
        "a yellow pyramid",
        "a blue torus",
        "a green capsule",
        "a red cube on top of a blue sphere",
        "a blue sphere on top of a red cube",
        "a green cone next to a yellow torus",
        "a yellow torus next to a green cone",
    ]
    cams = evaluation_cameras(n_azimuth=4, elevations=(20.0, 45.0, 80.0), azimuth_offset=30.0)
    flat = W.RenderConfig(ambient=1.0, diffuse=0.0, steps=40)
    for i, p in enumerate(prompts):
        x = W.render_scenes([W.parse_prompt(p)] * len(cams), cams, 32, flat)
        assert r_at_1(scorer.score(x, prompts, cams), i) >= 0.75, p


@pytest.mark.skipif(not SHIPPED, reason="scorer weights not shipped yet")
def test_shipped_scorer_needs_the_top_view_to_tell_cube_from_cylinder():
    """From above, a cube is a square and a cylinder a disc: the scorer must get both right there."""
    scorer = S.load_scorer()
    cams = evaluation_cameras(n_azimuth=4, elevations=(80.0,))
    for i, p in enumerate(["a red cube", "a red cylinder"]):
        x = W.render_scenes([W.parse_prompt(p)] * 4, cams, 32, W.RenderConfig(ambient=1.0, diffuse=0.0))
        assert r_at_1(scorer.score(x, ["a red cube", "a red cylinder"], cams), i) == 1.0
    assert math.isfinite(scorer.score(x, ["a red cube"]).sum().item())
