"""The guided prediction: CFG, Perp-Neg's perpendicular negatives and the CFG rescale, against closed forms."""

import pytest
import torch

from dreamstill.backend.distill.guidance import (
    ExtraRows,
    NegativePrompts,
    guided_prediction,
    perpendicular_component,
    rescale_cfg,
)
from dreamstill.backend.priors.analytic import ddpm_alphas_cumprod
from dreamstill.backend.priors.base import Prior, TextEmbedding


class TablePrior(Prior):
    """eps_hat(x_t; y, t) = table[y] + 0.1 x_t: every prompt has its own, known prediction. Counts its calls."""

    def __init__(self, prompts, shape=(2, 3, 3), seed=0):
        g = torch.Generator().manual_seed(seed)
        self.ids = {p: i for i, p in enumerate(prompts)}
        self.table = torch.randn(len(prompts), *shape, generator=g)
        self.alphas_cumprod = ddpm_alphas_cumprod()
        self.latent_shape = shape
        self.calls = 0

    def encode_text(self, prompts):
        return TextEmbedding(torch.tensor([float(self.ids[p]) for p in prompts]).view(-1, 1, 1))

    def predict_eps(self, x_t, t, text, camera=None):
        self.calls += 1
        ids = text.expand_to(x_t.shape[0]).tokens.view(-1).long()
        return self.table[ids] + 0.1 * x_t


@pytest.fixture()
def table():
    prior = TablePrior(["", "pos", "neg1", "neg2"])
    x_t = torch.randn(3, 2, 3, 3, generator=torch.Generator().manual_seed(1))
    return prior, x_t, torch.tensor([100, 500, 900])


def _eps(prior, x_t, prompt):
    return prior.table[prior.ids[prompt]] + 0.1 * x_t


def test_perpendicular_component_is_the_least_squares_rejection():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 2, 3, 3, generator=g), torch.randn(4, 2, 3, 3, generator=g)
    p = perpendicular_component(a, b)
    torch.testing.assert_close((p * b).flatten(1).sum(1), torch.zeros(4), atol=1e-5, rtol=0)
    coef = ((a - p) * b).flatten(1).sum(1) / b.flatten(1).pow(2).sum(1)
    torch.testing.assert_close(a - p, coef.view(-1, 1, 1, 1) * b, rtol=1e-4, atol=1e-6)  # a - p is parallel to b
    torch.testing.assert_close(perpendicular_component(a, torch.zeros_like(b)), a)


def test_cfg_in_one_call_with_extra_rows(table):
    prior, x_t, t = table
    cond, uncond = prior.encode_text(["pos"]), prior.encode_text([""])
    extra = ExtraRows(x_t * 2, t, prior.encode_text(["neg1"]))
    g = guided_prediction(prior, x_t, t, cond, uncond, 7.5, extra=extra)
    assert prior.calls == 1
    e_c, e_u = _eps(prior, x_t, "pos"), _eps(prior, x_t, "")
    torch.testing.assert_close(g.eps_cfg, e_u + 7.5 * (e_c - e_u))
    torch.testing.assert_close(g.direction, e_c - e_u)
    torch.testing.assert_close(g.extra, _eps(prior, 2 * x_t, "neg1"))
    default_text = guided_prediction(prior, x_t, t, cond, uncond, 7.5, extra=ExtraRows(x_t, t))
    torch.testing.assert_close(default_text.extra, e_c)  # text None: the positive prompt


def test_perp_neg_adds_only_the_perpendicular_part_of_each_negative(table):
    """eps_cfg = eps_u + s [(e_c - e_u) + sum_i w_i (d_i - <d_i, p> p / ||p||^2)], d_i = e_neg_i - e_u, p = e_c - e_u
    (Perp-Neg), computed here sample by sample in float64."""
    prior, x_t, t = table
    w = torch.tensor([[-1.0, -0.5], [0.0, -2.0], [-0.3, 0.0]])
    negs = NegativePrompts([prior.encode_text(["neg1"]), prior.encode_text(["neg2"])], w)
    g = guided_prediction(prior, x_t, t, prior.encode_text(["pos"]), prior.encode_text([""]), 5.0, negatives=negs)
    assert prior.calls == 1
    e_u = _eps(prior, x_t, "").double()
    p = _eps(prior, x_t, "pos").double() - e_u
    want = []
    for b in range(3):
        h = p[b].clone()
        for i, name in enumerate(("neg1", "neg2")):
            d = _eps(prior, x_t, name).double()[b] - e_u[b]
            h += w[b, i].double() * (d - (d * p[b]).sum() / (p[b] * p[b]).sum() * p[b])
        want.append(e_u[b] + 5.0 * h)
    torch.testing.assert_close(g.eps_cfg.double(), torch.stack(want), rtol=1e-5, atol=1e-6)


def test_a_negative_along_the_positive_direction_changes_nothing(table):
    prior, x_t, t = table
    cond, uncond = prior.encode_text(["pos"]), prior.encode_text([""])
    negs = NegativePrompts([cond], torch.full((3, 1), -3.0))  # d = p: no perpendicular part
    plain = guided_prediction(prior, x_t, t, cond, uncond, 7.5)
    torch.testing.assert_close(
        guided_prediction(prior, x_t, t, cond, uncond, 7.5, negatives=negs).eps_cfg, plain.eps_cfg
    )


def test_cfg_rescale_matches_lin_et_al_in_x0_space(table):
    """eps from x0_final = phi x0_cfg std(x0_c)/std(x0_cfg) + (1 - phi) x0_cfg, computed explicitly in x0 space."""
    prior, x_t, t = table
    g = guided_prediction(prior, x_t, t, prior.encode_text(["pos"]), prior.encode_text([""]), 7.5)
    alpha, sigma = prior.alpha_sigma(t, 4)
    alpha, sigma, x = alpha.double(), sigma.double(), x_t.double()
    x0_cfg = (x - sigma * g.eps_cfg.double()) / alpha
    x0_c = (x - sigma * g.eps_cond.double()) / alpha
    for phi in (0.0, 0.5, 1.0):
        k = x0_c.flatten(1).std(dim=1) / x0_cfg.flatten(1).std(dim=1)
        x0_final = phi * x0_cfg * k.view(-1, 1, 1, 1) + (1 - phi) * x0_cfg
        want = (x - alpha * x0_final) / sigma
        got = rescale_cfg(g.eps_cfg, g.eps_cond, x_t, prior.alpha_sigma(t, 4)[1], phi)
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    full = guided_prediction(prior, x_t, t, prior.encode_text(["pos"]), prior.encode_text([""]), 7.5, cfg_rescale=1.0)
    x0_full = (x - sigma * full.eps_cfg.double()) / alpha
    torch.testing.assert_close(x0_full.flatten(1).std(dim=1), x0_c.flatten(1).std(dim=1), rtol=1e-4, atol=1e-6)
