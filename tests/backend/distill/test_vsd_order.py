"""Measured, not asserted: what the update order changes when the score model gets few steps per iteration.

The L2-VSD appendix toy, with a denoising-trained score model instead of its idealised parameter regression:
a target p_0 = N(mu, Sigma) in 2D (exact noised scores, CFG 1), a set of N particles started far away, and a
Gaussian score model eps_phi (GaussianScoreNet: mean and Cholesky-like factor) that takes ``score_steps`` AdamW steps
per iteration on the current minibatch of "renders" (a few particles per iteration, like the engine's views).
Compared: VSD (PD order: gradient with phi_i, then phi steps), L-VSD (phi steps first), and L2-VSD (phi_i plus the
linearised lookahead, several eta). Reported: distance of the particle mean from mu and relative covariance error
||C - Sigma||_F / ||Sigma||_F along the run.

Run ``python tests/backend/distill/test_vsd_order.py`` for the table (pytest -s prints it too).
"""

from __future__ import annotations

import math

import torch

from dreamstill.backend.distill import DistillInput, make_method, surrogate_loss
from dreamstill.backend.distill.vsd import GaussianScoreNet
from dreamstill.backend.priors.analytic import GaussianPrior, gaussian_eps

MEAN = torch.tensor([1.0, -0.5])
COV = torch.tensor([[0.5, 0.2], [0.2, 0.3]])

VARIANTS = (
    ("exact q score", {"exact": True}),  # reference: eps_phi = the exact noised score of the current q
    ("vsd", {}),
    ("lookahead", {"order": "lookahead"}),
    ("l2vsd eta=0.1", {"lookahead_lr": 0.1}),
    ("l2vsd eta=1", {"lookahead_lr": 1.0}),
    ("l2vsd eta=10", {"lookahead_lr": 10.0}),
)


def run(
    variant: dict, steps=800, batch=4, score_steps=1, score_lr=0.05, lr=0.03, seed=0, checkpoints=(100, 200, 400, 800)
):
    """q = N(m_q, L_q L_q^T) is the "3D model": each iteration renders ``batch`` samples x = m_q + L_q c (c ~ N(0, I),
    the analogue of a random camera), and the surrogate loss carries the method's gradient to (m_q, L_q), whose Adam
    learning rate decays with a cosine to 0 (as the L2 toy). Returns [(iteration, mean error, cov error)] at the
    checkpoints and, last, the averages over the final 100 iterations."""
    prior = GaussianPrior(MEAN, COV)
    cond, uncond = prior.encode_text(["x"]), prior.encode_text([""])
    g = torch.Generator().manual_seed(seed)
    m_q = (torch.tensor([-2.0, 2.0]) + 0.5 * torch.randn(2, generator=g)).requires_grad_()
    l_q = (0.3 * torch.eye(2)).requires_grad_()
    if variant.get("exact"):

        def exact(x, t):
            return gaussian_eps(x, prior.alphas_cumprod[t], m_q.detach(), (l_q @ l_q.T).detach())

        m = make_method("vsd", prior, guidance=1.0, score_model=exact, max_step_percent=0.98)
    else:
        net = GaussianScoreNet(prior.alphas_cumprod, 2)
        method = "l2vsd" if "lookahead_lr" in variant else "vsd"
        m = make_method(
            method,
            prior,
            guidance=1.0,
            score_net=net,
            lora_lr=score_lr,
            lora_steps_per_iter=score_steps,
            max_step_percent=0.98,
            **variant,
        )
    opt = torch.optim.Adam([m_q, l_q], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i / steps, 1.0))))
    rows, tail = [], []
    for i in range(1, steps + 1):
        c = torch.randn(batch, 2, generator=g)
        z = (m_q + c @ l_q.T).view(batch, 2, 1, 1)
        out = m.gradient(DistillInput(z, cond, uncond, i, steps, g))
        opt.zero_grad()
        surrogate_loss(z, out.grad).backward()
        opt.step()
        sched.step()
        err = (float((m_q.detach() - MEAN).norm()), float(((l_q @ l_q.T).detach() - COV).norm() / COV.norm()))
        if i in checkpoints:
            rows.append((i, *err))
        if i > steps - 100:
            tail.append(err)
    rows.append(("last100", sum(e[0] for e in tail) / len(tail), sum(e[1] for e in tail) / len(tail)))
    return rows


def measure(seeds=(0, 1, 2), **kw) -> str:
    """Errors averaged over seeds, per variant: 'mean error / relative covariance error' at each checkpoint."""
    table = {}
    for name, variant in VARIANTS:
        runs = [run(variant, seed=s, **kw) for s in seeds]
        table[name] = [(r[0][0], sum(x[1] for x in r) / len(r), sum(x[2] for x in r) / len(r)) for r in zip(*runs)]
    heads = [str(row[0]) for row in next(iter(table.values()))]
    lines = [f"{'variant':<16}" + "".join(f"{'it ' + h:>16}" for h in heads)]
    for name, rows in table.items():
        lines.append(f"{name:<16}" + "".join(f"{m:>9.3f}/{c:<6.3f}" for _, m, c in rows))
    return "\n".join(lines)


def test_update_order_measurement_runs():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        table = measure(seeds=(0,), steps=100, checkpoints=(50, 100))
    finally:
        torch.set_num_threads(n)
    print("\n" + table)
    assert "nan" not in table


if __name__ == "__main__":
    torch.set_num_threads(1)
    for score_steps in (1, 10):
        print(f"\nscore-model steps per iteration: {score_steps}")
        print(measure(score_steps=score_steps))
