"""Amortized training (ScaleDreamer Sec. 3): one generator G_theta over a prompt corpus, by score distillation.

Each step draws a minibatch of prompts y_1..y_P from the corpus, makes their fields G_theta(y_p) in one forward
pass, renders each from V random cameras, and applies the same distillation step as per-prompt optimization
(engine.step.DistillStep: render -> encode -> method gradient -> surrogate loss),
    L = sum_p 0.5 ||z_p - sg(z_p - grad_p)||^2 / (P V),
so d L / d theta = sum_p grad_p^T dz_p/dtheta. The method (ASD by default) is the ordinary ``distill`` method.

ScaleDreamer's released configs add two terms on the rendered opacity o (threestudio's sparsity and opaque losses;
the paper does not mention them), both means over the rendered pixels:
    lambda_sparsity * mean sqrt(o^2 + 0.01)                  (fog and floaters cost opacity; lambda = 20)
    lambda_opaque(k) * mean BCE(o, o) = -o log o - (1-o) log(1-o)  (the entropy of o: pushes pixels to 0 or 1)
with lambda_opaque(k) ramped linearly from 0 at 80% of the steps to 10 at the end. On the toy world the entropy ramp
lowered the geometry IoU in both fine-tuning runs that reached it, so the shipped generator is a checkpoint from
before it (docs/results/instant_generator.md; ``--keep-checkpoints`` keeps every checkpoint of a run).

SDF generators (``arch_options={"geometry": "sdf"}``, base.SDFDecoding) take the per-prompt surface stage's
regularizers instead of the opacity terms (engine/surface.py's Eikonal and NormalSmoothness on each prompt's field,
averaged over the step's P prompts):
    + (1/P) sum_p [ w_e E_x[(||grad d_p(x)|| - 1)^2]              x uniform in the scene ball
                    + w_n E_x[||n_p(x) - n_p(x + delta)||^p] ]     x where prompt p's opaque rays meet its surface
and the VolSDF beta annealed geometrically, beta_k = beta_start (beta_end / beta_start)^(k / (K - 1)); renders add
``num_importance`` samples per ray. With ``init_sdf_from`` a step is shape initialisation instead
(generators/shape_init.py: regression onto a density generator's solids, no prior). With ``shape_regularization``
w_s > 0 (toy-world corpora) a distillation step also adds LATTE3D's shape regularization,
    + w_s (1/P) sum_p L_rec(G(y_p), phi_p)
with L_rec shape_init's reconstruction loss onto the toy world's solid phi_p of prompt y_p (the pretraining's own
targets), so distillation refines colours and details without giving up the pretrained shapes.

Data-parallel training: launched with torchrun, each rank draws its own prompts (seed + rank) and DDP averages
gradients (gloo on CPU, NCCL on GPU), so the replicas stay identical.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import torch

from ..distill import encode_view_prompts, make_method
from ..engine.images import contact_sheet, save_png
from ..engine.step import DistillStep, DistillViews, wants_view_prompts
from ..fields import Background
from ..fields.sdf import geometric_anneal
from ..priors import PRIOR_DTYPES, load_prior
from ..priors.base import TextEmbedding
from ..render import RenderSettings, render
from ..render.cameras import orbit_cameras, sample_cameras
from . import build_generator
from .config import CHECKPOINT_NAME, LOSS_LOG_NAME, GeneratorTrainConfig, load_corpus
from .shape_init import ShapeTeacher, WorldTarget, reconstruction_loss, require_toy_world


# --- training --------------------------------------------------------------------------------------------------
class GeneratorTrainer:
    def __init__(self, config: GeneratorTrainConfig, out_dir: Path, prior=None, rank: int = 0, world_size: int = 1):
        self.config, self.out_dir = config, Path(out_dir)
        self.rank, self.world_size = rank, world_size
        self.prior = prior if prior is not None else load_prior(config.prior, dtype=PRIOR_DTYPES[config.prior_dtype])
        self.device = self.prior.device
        self.prompts = load_corpus(config.corpus)
        self.text = self._encode(self.prompts)
        self.uncond = self.prior.encode_text([""])
        torch.manual_seed(config.seed)  # identical initial weights on every rank
        self.generator = build_generator(config.arch, self.text.tokens.shape[-1], **config.arch_options).to(self.device)
        self.background = Background().to(self.device)
        self.model = self.generator
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(self.generator)
        self.method = make_method(config.method, self.prior, guidance=config.guidance, **config.options)
        # ScaleDreamer's Adam has no momentum (beta_1 = 0); shape initialisation is a regression, and with beta_1 = 0
        # its first steps threw the tiny test's loss up 9-fold: there, the usual beta_1 = 0.9
        betas = (0.9, 0.99) if config.init_sdf_from else (0.0, 0.99)
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=betas, eps=1e-8)
        self.sample_rng = torch.Generator().manual_seed(config.seed * 1000 + rank)  # prompts, cameras, shading
        self.noise_rng = torch.Generator(self.device).manual_seed(config.seed * 1000 + rank + 1)
        self.resolution = config.resolution or self.prior.image_size
        # the shading schedule is the per-prompt one (engine.step.ShadingSchedule's defaults)
        self.distill = DistillStep(
            self.prior, self.method, self.resolution, RenderSettings(num_samples=config.num_samples)
        )
        self.step = 0
        self.lineage: list[dict] = []  # the earlier runs this one was fine-tuned from: their configs and steps
        self.sdf = self.generator.decoding.geometry == "sdf"
        if self.sdf:
            self.distill.render_settings = RenderSettings(
                num_samples=config.num_samples, num_importance=config.num_importance
            )
        self.regularizer_rng = torch.Generator().manual_seed(config.seed * 1000 + rank + 2)  # points of the SDF terms
        self.shape_teacher = None
        if config.init_sdf_from:  # shape initialisation: the student starts from the teacher's weights
            if config.shape_targets == "world":
                require_toy_world(self.prompts)
            self.shape_teacher = ShapeTeacher.load(
                config.init_sdf_from, self.text.tokens.shape[-1], self.device, config.shape_targets
            )
            self.lineage = self.shape_teacher.init_student(self.generator, config)
        if config.shape_regularization > 0:
            if not self.sdf or config.init_sdf_from:
                raise ValueError(
                    "shape_regularization needs an SDF generator that distills (geometry=sdf, no init_sdf_from)"
                )
            require_toy_world(self.prompts)

    def _encode(self, prompts: list[str], chunk: int = 256) -> TextEmbedding:
        parts = [self.prior.encode_text(prompts[i : i + chunk]) for i in range(0, len(prompts), chunk)]
        return TextEmbedding.cat(parts)

    def _rows(self, idx: list[int]) -> TextEmbedding:
        pooled = None if self.text.pooled is None else self.text.pooled[idx]
        return TextEmbedding(self.text.tokens[idx], pooled)

    def train_step(self) -> float:
        c = self.config
        idx = torch.randint(len(self.prompts), (c.prompts_per_step,), generator=self.sample_rng).tolist()
        text = self._rows(idx)
        if self.shape_teacher is not None:
            return self._shape_init_step(idx, text)
        if self.sdf:
            fraction = self.step / max(1, c.steps - 1)
            self.generator.decoding.set_beta(geometric_anneal(c.beta_start, c.beta_end, fraction))
        fields = self.model(text)
        groups = []
        for p in range(len(idx)):
            cams = sample_cameras(c.views_per_prompt, self.sample_rng).to(self.device)
            groups.append(
                self.distill.render(
                    fields[p], self.background, cams, self.step, c.steps, self.sample_rng, self.noise_rng
                )
            )
        views = DistillViews.cat(groups)
        cond = text.repeat(c.views_per_prompt)
        view_prompts = None
        if wants_view_prompts(self.method):  # Perp-Neg: the step's prompts' front/side/back views, per view
            view_prompts = encode_view_prompts(self.prior, [self.prompts[i] for i in idx]).repeat(c.views_per_prompt)
        loss = self.distill.loss(views, cond, self.uncond, self.step, c.steps, self.noise_rng, view_prompts)
        loss = loss + (self._surface_loss(fields, groups) if self.sdf else self._opacity_loss(views.opacity))
        if c.shape_regularization > 0:
            loss = loss + c.shape_regularization * self._shape_loss(fields, [self.prompts[i] for i in idx])
        return self._apply(loss)

    def _apply(self, loss: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return float(loss.detach())

    def _shape_init_step(self, idx: list[int], text: TextEmbedding) -> float:
        fields = self.model(text)
        prompts = [self.prompts[i] for i in idx]
        loss = self.shape_teacher.loss(fields, text, prompts, self.regularizer_rng, self.config.init_sdf_resolution)
        return self._apply(loss)

    def _shape_loss(self, fields, prompts: list[str]) -> torch.Tensor:
        """(1/P) sum_p L_rec(G(y_p), phi_p): the reconstruction loss onto each prompt's toy-world solid."""
        resolution = self.config.init_sdf_resolution
        losses = [
            reconstruction_loss(
                fields[p], WorldTarget(prompt, float(fields[p].bound), resolution), self.regularizer_rng
            )
            for p, prompt in enumerate(prompts)
        ]
        return torch.stack(losses).mean()

    def _surface_loss(self, fields, groups: list[DistillViews]) -> torch.Tensor:
        """(1/P) sum_p (eikonal + normal smoothness) of prompt p's field, on its own rendered view group."""
        from ..engine.surface import Eikonal, NormalSmoothness

        c, rng, total = self.config, self.regularizer_rng, groups[0].z.new_zeros(())
        for p, group in enumerate(groups):
            terms = [
                Eikonal(fields[p], c.eikonal_weight, c.eikonal_points, rng),
                NormalSmoothness(
                    fields[p],
                    c.normal_smoothness_weight,
                    c.normal_smoothness_jitter,
                    c.normal_smoothness_power,
                    c.smoothness_points,
                    rng,
                ),
            ]
            for term in terms:
                if term.weight > 0:
                    total = total + term(group)
        return total / len(groups)

    def opaque_weight(self) -> float:
        """lambda_opaque ramped linearly from 0 at 80% of the run to its full value at the last step."""
        fraction = self.step / max(self.config.steps, 1)
        return self.config.lambda_opaque * min(max((fraction - 0.8) / 0.2, 0.0), 1.0)

    def _opacity_loss(self, opacity: torch.Tensor) -> torch.Tensor:
        c, loss = self.config, opacity.new_zeros(())
        if c.lambda_sparsity > 0:
            loss = loss + c.lambda_sparsity * (opacity.pow(2) + 0.01).sqrt().mean()
        weight = self.opaque_weight()
        if weight > 0:
            o = opacity.clamp(1e-3, 1.0 - 1e-3)
            loss = loss - weight * (o * o.log() + (1 - o) * (1 - o).log()).mean()
        return loss

    def init_from(self, path: Path) -> None:
        """Start this run from another run's generator weights (fine-tuning: fresh optimizer, step 0). The source's
        config and step join ``lineage``, which checkpoints and exported generators keep: a shipped generator names
        every stage that made it."""
        state = torch.load(path, map_location=self.device, weights_only=True)
        theirs = {k: state["config"].get(k) for k in ("arch", "arch_options", "prior")}
        ours = {k: getattr(self.config, k) for k in theirs}
        if theirs != ours:
            raise ValueError(
                f"{path} holds a generator with {theirs}; this run is {ours}: use the same --arch, "
                f"--arch-option and --prior"
            )
        self.generator.load_state_dict(state["generator"])
        self.lineage = list(state.get("lineage", [])) + [{"config": state["config"], "step": state["step"]}]

    # --- checkpoints -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "config": dataclasses.asdict(self.config),
            "step": self.step,
            "lineage": self.lineage,
            "generator": self.generator.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sample_generator": self.sample_rng.get_state(),  # key names kept: checkpoints stay loadable
            "noise_generator": self.noise_rng.get_state(),
            "regularizer_generator": self.regularizer_rng.get_state(),
        }

    def save(self, path: Path | None = None) -> Path:
        path = Path(path or self.out_dir / CHECKPOINT_NAME)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(path)
        return path

    def load(self, path: Path) -> None:
        state = torch.load(path, map_location=self.device, weights_only=True)
        # settings added since the checkpoint was written take their defaults (the behaviour of the code that wrote it)
        saved = {**dataclasses.asdict(GeneratorTrainConfig()), **state["config"]}
        ours = dataclasses.asdict(self.config)
        changed = [k for k in ours if saved[k] != ours[k]]
        if changed:
            was = ", ".join(f"{k}={saved[k]!r}" for k in changed)
            now = ", ".join(f"{k}={ours[k]!r}" for k in changed)
            raise ValueError(
                f"{path} was trained with {was}; this run has {now}. Resume with the same flags, "
                f"or train into another folder"
            )
        self.step = state["step"]
        self.lineage = state.get("lineage", [])
        self.generator.load_state_dict(state["generator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sample_rng.set_state(state["sample_generator"])
        self.noise_rng.set_state(state["noise_generator"])
        if "regularizer_generator" in state:  # written before SDF generators existed: their draws never mattered
            self.regularizer_rng.set_state(state["regularizer_generator"])

    @torch.no_grad()
    def render_grid(self, prompts: list[str], views: int = 4, size: int = 64):
        """(rows = prompts, columns = views) uint8 image grid of the current generator."""
        text = self._encode(prompts)
        fields = self.generator(text)
        images = []
        for p in range(len(prompts)):
            out = render(
                fields[p],
                orbit_cameras(views).to(self.device),
                size,
                size,
                self.background,
                num_samples=2 * self.config.num_samples,
            )
            images += [(img.clamp(0, 1) * 255).byte().cpu().numpy() for img in out.rgb]
        return contact_sheet(images, columns=views)

    def train(self, progress: bool = True) -> None:
        from tqdm import tqdm

        c = self.config
        bar = tqdm(total=c.steps, initial=self.step, disable=not progress or self.rank != 0, unit="step")
        losses = open_loss_log(self.out_dir / LOSS_LOG_NAME, self.step) if self.rank == 0 else None
        start = time.perf_counter()
        while self.step < c.steps:
            loss = self.train_step()
            if losses is not None:
                losses.write(f"{self.step},{loss:.6g}\n")
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
            if self.rank == 0 and c.checkpoint_every and self.step % c.checkpoint_every == 0:
                self.save()
                if c.keep_checkpoints:
                    self.save(self.out_dir / "checkpoints" / f"step_{self.step:06d}.pt")
            if self.rank == 0 and c.grid_every and self.step % c.grid_every == 0:
                save_png(self.render_grid(self.prompts[:4]), self.out_dir / f"grid_{self.step:06d}.png")
        bar.close()
        if losses is not None:
            losses.close()
        if self.rank == 0:
            self.save()
            (self.out_dir / "train_log.json").write_text(
                json.dumps({"steps": self.step, "seconds": time.perf_counter() - start}, indent=1)
            )


def open_loss_log(path: Path, step: int):
    """``path`` (a CSV "step,loss", row k: the loss of the k-th step, whose gradient its update followed) opened
    line-buffered for appending, without its rows after ``step``: a run resumed from step ``step`` writes those again."""
    rows = path.read_text().splitlines()[1:] if path.exists() else []
    path.parent.mkdir(parents=True, exist_ok=True)
    log = path.open("w", buffering=1)
    log.write("step,loss\n" + "".join(row + "\n" for row in rows if int(row.split(",")[0]) <= step))
    return log


def distributed_context() -> tuple[int, int]:
    """(rank, world_size) under torchrun (initialising the process group: NCCL on GPU, gloo on CPU), else (0, 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world_size
