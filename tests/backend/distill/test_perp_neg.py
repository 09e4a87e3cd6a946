"""Perp-Neg's view prompts and weights, and Perp-Neg as an option of every method."""

import math

import pytest
import torch

from dreamstill.backend.distill import DistillInput, encode_view_prompts, make_method
from dreamstill.backend.distill.perp_neg import F_FRONT_SIDE, decay, perp_neg_prompts, view_prompt_texts
from dreamstill.backend.priors.base import TextEmbedding


def _views():
    """View embeddings 1, 2, 3 (front, side, back) as one-number "embeddings", so interpolations are readable."""
    from dreamstill.backend.distill.perp_neg import ViewPrompts

    return ViewPrompts(*(TextEmbedding(torch.full((1, 1, 1), v)) for v in (1.0, 2.0, 3.0)))


def _cams(elev, azim):
    n = len(azim)
    return torch.stack(
        [
            torch.as_tensor(elev, dtype=torch.float32).expand(n),
            torch.tensor(azim),
            torch.full((n,), 3.0),
            torch.full((n,), 45.0),
        ],
        1,
    )


def test_weight_curves():
    assert math.isclose(float(decay(F_FRONT_SIDE, torch.tensor(1.0))), 0.0, abs_tol=1e-3)  # pure front: no self-repel
    assert float(decay((2.0, 1.0, 0.5), torch.tensor(0.0))) == 2.5


def test_view_prompts_and_weights_follow_the_azimuth():
    """front (0 deg): positive = front, negative side weighted -f_sf(0); side (90): positive = side, front repelled;
    back (180): positive = back; 45 deg: halfway between front and side. Continuous at 90 deg."""
    cond, uncond = TextEmbedding(torch.full((1, 1, 1), 9.0)), TextEmbedding(torch.zeros(1, 1, 1))
    azim = [0.0, 45.0, 89.999, 90.0, 180.0, -135.0, 360.0]
    pos, negs = perp_neg_prompts(_views(), cond, uncond, _cams(10.0, azim))
    torch.testing.assert_close(
        pos.tokens.flatten(), torch.tensor([1.0, 1.5, 2.0, 2.0, 3.0, 2.5, 1.0]), atol=1e-4, rtol=0
    )
    w = negs.weights
    f_fs0 = 4 * math.exp(0.0) - 2.426  # f_fs(0) = f_sf(0) = 1.574
    assert w[0].tolist() == pytest.approx([0.0, -f_fs0], abs=1e-3)  # front view: "side" repelled
    assert negs.texts[1].tokens[0].item() == 2.0
    # side view from either side of 90 degrees: "front" repelled by about the same weight, "side" not at all
    front_weight = {i: float(w[i][int(negs.texts[1].tokens[i].item() == 1.0)]) for i in (2, 3)}
    assert front_weight[2] == pytest.approx(-f_fs0, abs=1e-3) and front_weight[3] == pytest.approx(-1.5735, abs=1e-3)
    assert w[4].tolist() == pytest.approx([-(1 - 0.606), -(1 + 0.967)], abs=1e-3)  # back: side and front repelled
    torch.testing.assert_close(w[6], w[0])  # azimuth wraps


def test_overhead_views_keep_their_prompt_and_get_no_negatives():
    cond = TextEmbedding(torch.full((2, 1, 1), 9.0))
    pos, negs = perp_neg_prompts(_views(), cond, TextEmbedding(torch.zeros(1, 1, 1)), _cams([70.0, 10.0], [0.0, 0.0]))
    assert pos.tokens.flatten().tolist() == [9.0, 1.0]
    assert negs.weights[0].tolist() == [0.0, 0.0] and negs.weights[1, 1] < 0


def test_encode_view_prompts(tiny8):
    prior, _, _ = tiny8
    views = encode_view_prompts(prior, "a red cube")
    assert view_prompt_texts("a red cube") == [
        "a red cube, front view",
        "a red cube, side view",
        "a red cube, back view",
    ]
    torch.testing.assert_close(views.back.tokens, prior.encode_text(["a red cube, back view"]).tokens)
    two = encode_view_prompts(prior, ["a red cube", "a blue cone"]).repeat(2)  # 2 prompts x 2 views each
    assert len(two.side) == 4
    torch.testing.assert_close(two.side.tokens[2:3], prior.encode_text(["a blue cone, side view"]).tokens)
    torch.testing.assert_close(two.front.tokens[1:2], views.front.tokens)


def _input(prior, cond, uncond, views=None, seed=0):
    z = torch.rand(2, *prior.latent_shape, generator=torch.Generator().manual_seed(4)) * 2 - 1
    cam = _cams([15.0, 5.0], [30.0, 150.0])
    return DistillInput(z, cond, uncond, 0, 10, torch.Generator().manual_seed(seed), camera=cam, view_prompts=views)


def test_sds_with_perp_neg_closed_form(tiny8):
    """SDS with perp_neg: w(t) (eps_u + s [(e_pos - e_u) + sum_i w_i perp(e_neg_i - e_u, e_pos - e_u)] - eps),
    rebuilt here from separate prior calls on the interpolated positive and the negatives."""
    prior, cond, uncond = tiny8
    views = encode_view_prompts(prior, "a red cube")
    inp = _input(prior, cond, uncond, views)
    out = make_method("sds", prior, guidance=7.5, perp_neg=True).gradient(inp)
    g = torch.Generator().manual_seed(0)
    t = torch.randint(20, 981, (2,), generator=g)
    eps = torch.randn(inp.z.shape, generator=g)
    x_t = prior.add_noise(inp.z, eps, t)
    pos, negs = perp_neg_prompts(views, cond, uncond, inp.camera)
    e_u = prior.predict_eps(x_t, t, uncond.expand_to(2))
    p = prior.predict_eps(x_t, t, pos) - e_u
    h = p.clone()
    for i, neg in enumerate(negs.texts):
        d = prior.predict_eps(x_t, t, neg) - e_u
        coef = (d * p).flatten(1).sum(1) / (p * p).flatten(1).sum(1)
        h += negs.weights[:, i].view(-1, 1, 1, 1) * (d - coef.view(-1, 1, 1, 1) * p)
    w = (1 - prior.alphas_cumprod[t]).view(-1, 1, 1, 1)
    torch.testing.assert_close(out.grad, w * (e_u + 7.5 * h - eps), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["sds", "csd", "asd", "ssd", "fsd", "vsd"])
def test_perp_neg_is_an_option_of_every_method(tiny8, name):
    prior, cond, uncond = tiny8
    views = encode_view_prompts(prior, "a red cube")
    plain = make_method(name, prior).gradient(_input(prior, cond, uncond, views))
    perp = make_method(name, prior, perp_neg=True).gradient(_input(prior, cond, uncond, views))
    assert torch.isfinite(perp.grad).all() and torch.equal(perp.t, plain.t)
    assert (perp.grad - plain.grad).abs().max() > 1e-6


def test_perp_neg_says_what_it_needs(tiny8, tiny8_v_camera):
    prior, cond, uncond = tiny8
    with pytest.raises(ValueError, match="view_prompts"):
        make_method("sds", prior, perp_neg=True).gradient(_input(prior, cond, uncond))
    cam_prior, cam_cond, cam_uncond = tiny8_v_camera
    views = encode_view_prompts(cam_prior, "a blue cone")
    with pytest.raises(ValueError, match="camera-conditioned"):
        make_method("sds", cam_prior, perp_neg=True).gradient(_input(cam_prior, cam_cond, cam_uncond, views))
