"""R@1 of the built-in prior's DDIM samples (CFG 5, 50 steps) for the 16 benchmark prompts x 4 azimuths."""

import torch

from dreamstill.backend.eval import benchmark as B
from dreamstill.backend.eval.scorer import load_scorer
from dreamstill.backend.priors import load_prior
from dreamstill.backend.priors.builtin.sampling import sample_ddim
from dreamstill.backend.render.cameras import Cameras, orbit_cameras

torch.set_num_threads(1)
prior = load_prior("builtin")
scorer = load_scorer(None)
prompts = list(B.BENCHMARK_PROMPTS)
views = 4
cam = orbit_cameras(views, elevation=20.0)
cams = Cameras(*(x.repeat(len(prompts)) for x in (cam.elevation, cam.azimuth, cam.distance, cam.fov)))
texts = [p for p in prompts for _ in range(views)]
samples = sample_ddim(prior, texts, cams, steps=50, guidance=5.0, rng=torch.Generator().manual_seed(0))
for name, pset in (("16 benchmark prompts", prompts), ("96 with hard negatives", list(B.BENCHMARK_PROMPT_SET))):
    s = scorer.score(samples, pset, cams)
    target = torch.tensor([pset.index(t) for t in texts])
    print(name, "R@1", (s.argmax(1) == target).float().mean().item())
