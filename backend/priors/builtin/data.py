"""The built-in prior's training data: toy-world renders from random cameras with their captions, made on the fly
from a seeded torch.Generator (``rng``)."""

from __future__ import annotations

import torch

from . import world as W
from .train_config import TrainConfig


class Batches:
    """Seeded on-the-fly training batches: (x_0 (B,3,H,W) in [-1,1], token ids (B,L), camera (B,4), texts).

    Renders ``chunk`` fresh images at a time (one sphere-tracing call amortises the GPU's launch overhead) and hands
    them out in consecutive batches; every image is used once. A chunk starts at every multiple of
    ``chunk // batch`` steps, so a checkpoint taken at such a step resumes exactly.
    """

    def __init__(self, cfg: TrainConfig, tokenizer, device, chunk: int | None = None):
        self.cfg = cfg
        self.device = torch.device(device)
        self.chunk = max(cfg.batch_size, chunk or cfg.render_chunk)
        self.prompts, _ = W.split_prompts(cfg.split_seed, cfg.heldout_fraction)
        ids = tokenizer(
            self.prompts + [""], padding="max_length", max_length=cfg.max_length, truncation=True, return_tensors="pt"
        ).input_ids
        self.ids = {p: ids[i] for i, p in enumerate(self.prompts + [""])}
        self.render_cfg = W.RenderConfig(supersample=cfg.supersample, light_jitter=cfg.light_jitter)
        self._buffer = None
        self._pos = 0

    @property
    def steps_per_chunk(self) -> int:
        return self.chunk // self.cfg.batch_size

    def render(self, n: int, rng: torch.Generator):
        from ...render.cameras import sample_cameras

        scenes = W.sample_scenes(n, rng, self.prompts, self.cfg.single_fraction)
        cams = sample_cameras(n, rng)
        perm = torch.randperm(n, generator=rng)  # stratified azimuths, shuffled against the scenes
        cams = type(cams)(*(x[perm] for x in (cams.elevation, cams.azimuth, cams.distance, cams.fov)))
        drop = (torch.rand(n, generator=rng) < self.cfg.caption_dropout).tolist()
        texts = ["" if d else W.caption(s) for s, d in zip(scenes, drop)]
        parts = []
        for i in range(0, n, 4096):  # bounded memory per sphere-tracing call
            sub = [scenes[j] for j in range(i, min(n, i + 4096))]
            cam = type(cams)(*(x[i : i + 4096] for x in (cams.elevation, cams.azimuth, cams.distance, cams.fov)))
            parts.append(W.render_scenes(sub, cam.to(self.device), self.cfg.image_size, self.render_cfg, rng))
        rgb = torch.cat(parts)
        ids = torch.stack([self.ids[text] for text in texts]).to(self.device)
        return 2 * rgb - 1, ids, cams.as_condition().to(self.device), texts

    def sample(self, batch: int, rng: torch.Generator):
        if batch != self.cfg.batch_size:
            return self.render(batch, rng)
        if self._buffer is None or self._pos + batch > self.chunk:
            self._buffer = self.render(self.steps_per_chunk * batch, rng)
            self._pos = 0
        sl = slice(self._pos, self._pos + batch)
        self._pos += batch
        x0, ids, cam, texts = self._buffer
        return x0[sl], ids[sl], cam[sl], texts[sl]
