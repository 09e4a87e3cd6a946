"""A Prior backed by diffusers components: Stable Diffusion 1.x/2.x style stacks and the built-in toy-world prior.

Folder layout (the one diffusers writes): ``unet/`` (UNet2DConditionModel), ``scheduler/`` (any scheduler config;
read with DDPMScheduler for its training schedule), ``text_encoder/`` (CLIPTextModel), ``tokenizer/`` (CLIPTokenizer),
optionally ``vae/`` (AutoencoderKL; absent means a pixel-space prior) and ``model_index.json``. An optional
``dreamstill.json`` holds Dreamstill extras:

- ``pixel_unshuffle`` r: the UNet sees pixel_unshuffle(x, r) (C r^2 channels at h/r x w/r, space-to-depth) and its
  output is pixel_shuffle'd back, so the prior's model space stays (C, h, w).
- ``image_size``: the render resolution; default unet.sample_size * r * f (f = VAE downsampling factor, 1 without).

Maths (notation of base.py): x_t = alpha_t x_0 + sigma_t eps, alpha_t = sqrt(bar-alpha_t), sigma_t =
sqrt(1 - bar-alpha_t). The network output is turned into an epsilon prediction:
- "epsilon": eps_hat = out;
- "v_prediction" (Salimans & Ho 2022, v = alpha_t eps - sigma_t x_0): eps_hat = alpha_t v + sigma_t x_t;
- "sample" (x_0-prediction): eps_hat = (x_t - alpha_t x0_hat) / sigma_t.
A UNet with a learned variance (out_channels = 2 C, DeepFloyd IF) keeps the first C channels.

Heavy imports (diffusers, transformers, huggingface_hub) happen inside functions, so importing this module is cheap.
"""

from __future__ import annotations

import json
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from .base import Prior, TextEmbedding
from .camera import CAMERA_FEATURES, camera_features

HUB_ALLOW_PATTERNS = [
    "model_index.json",
    "dreamstill.json",
    "scheduler/*.json",
    "tokenizer/*",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "text_encoder/model.safetensors.index.json",
    "text_encoder/model-*.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.safetensors.index.json",
    "unet/diffusion_pytorch_model-*.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
]
REFERENCE_HUB_ID = "stabilityai/stable-diffusion-2-1-base"
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
_SANE_MAX_LENGTH = 100_000  # tokenizers without a configured length report ~1e30


class PriorNotFoundError(FileNotFoundError):
    """The prior's weights are not on this machine (or the folder is incomplete); the message says how to get them."""


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE asks for no network (read at call time, not at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA (same range as fp32, no loss scaling needed), fp32 on CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def _how_to_get(name: str) -> str:
    return (
        f"Download it on a machine with network: `hf download {name}` (older huggingface_hub: "
        f"`huggingface-cli download {name}`), then copy the Hugging Face cache (~/.cache/huggingface/hub) here, or "
        f"pass a local folder in diffusers layout (unet/, scheduler/, text_encoder/, tokenizer/, optional vae/). "
        f'The built-in prior ("builtin") works offline.'
    )


def _looks_like_path(name: str) -> bool:
    """Hub ids are "owner/name" (one slash, no leading dot/slash/tilde); anything else is a local path."""
    return (
        name.startswith((".", "/", "~", "\\"))
        or name.count("/") != 1
        or os.sep != "/"
        and os.sep in name
        or Path(name).expanduser().exists()
    )


def resolve_prior_folder(name_or_path: str | os.PathLike) -> Path:
    """A local folder in diffusers layout for a folder path or a hub id, or PriorNotFoundError.

    Hub ids are looked up in the Hugging Face cache first (local_files_only); only when HF_HUB_OFFLINE is unset and
    the cache misses is the hub asked (with huggingface_hub's own connect timeouts, only the files a prior needs:
    safetensors weights, configs, tokenizer).
    """
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if _looks_like_path(name):
        raise PriorNotFoundError(
            f"prior {name!r}: no such folder ({path.resolve()}). Pass an existing folder in diffusers layout, a "
            f'Hugging Face hub id such as {REFERENCE_HUB_ID!r}, "builtin" or "tiny".'
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, allow_patterns=HUB_ALLOW_PATTERNS, local_files_only=True))
    except Exception as cached_error:  # noqa: BLE001 - any cache miss means "not here"
        if hub_offline():
            raise PriorNotFoundError(
                f"prior {name!r} was not found locally or in the Hugging Face cache, and HF_HUB_OFFLINE is set so it "
                f"cannot be downloaded. {_how_to_get(name)}"
            ) from cached_error
    try:
        return Path(snapshot_download(name, allow_patterns=HUB_ALLOW_PATTERNS))
    except Exception as error:  # noqa: BLE001 - network, auth, missing repo: all end the same way for the user
        raise PriorNotFoundError(
            f"prior {name!r} was not found locally or in the Hugging Face cache, and downloading it failed "
            f"({type(error).__name__}: {error}). {_how_to_get(name)}"
        ) from error


@contextmanager
def quiet_weight_loading():
    """Silence diffusers' and transformers' "Loading weights" progress bars (one per component, in every run and in
    the server log) while local files load; afterwards the bars are as they were (hub downloads keep theirs)."""
    import huggingface_hub.utils as hub
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    was_on = (transformers_logging.is_progress_bar_enabled(), diffusers_logging.is_progress_bar_enabled())
    hub_was_off = hub.are_progress_bars_disabled()
    transformers_logging.disable_progress_bar()  # this also turns the hub's bars off: put back below
    diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        with warnings.catch_warnings():  # enabling warns when HF_HUB_DISABLE_PROGRESS_BARS=1 forbids it
            warnings.simplefilter("ignore")
            if was_on[0]:
                transformers_logging.enable_progress_bar()
            if was_on[1]:
                diffusers_logging.enable_progress_bar()
            if hub_was_off:
                hub.disable_progress_bars()
            elif hub.are_progress_bars_disabled():
                hub.enable_progress_bars()


def read_dreamstill_json(folder: Path) -> dict:
    """Dreamstill extras of a prior folder: {"pixel_unshuffle": int >= 1, "image_size": int or None}."""
    extras = {"pixel_unshuffle": 1, "image_size": None}
    path = folder / "dreamstill.json"
    if not path.is_file():
        return extras
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); fix or delete it") from error
    r = data.get("pixel_unshuffle", 1)
    if not isinstance(r, int) or r < 1:
        raise ValueError(f"{path}: pixel_unshuffle must be an integer >= 1, got {r!r}")
    size = data.get("image_size")
    if size is not None and (not isinstance(size, int) or size < 1 or size % r):
        raise ValueError(
            f"{path}: image_size must be a positive integer divisible by pixel_unshuffle={r}, got {size!r}"
        )
    extras.update(pixel_unshuffle=r, image_size=size)
    return extras


class DiffusersPrior(Prior):
    """The frozen diffusion model of a diffusers folder, seen through the Prior interface.

    Attributes beyond Prior's: ``unet`` (public: VSD adds a LoRA to it and calls it through ``unet_forward``),
    ``scheduler`` (a DDPMScheduler carrying the training schedule), ``text_encoder``, ``tokenizer``, ``vae`` (or None
    for pixel priors), ``prediction_type``, ``pixel_unshuffle``, ``vae_scale_factor`` f, ``model_max_length``, ``name``.
    """

    def __init__(
        self,
        unet,
        scheduler,
        text_encoder,
        tokenizer,
        vae=None,
        *,
        pixel_unshuffle: int = 1,
        image_size: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        name: str = "diffusers",
    ):
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype if dtype is not None else default_dtype(self.device)
        self.name = name
        self.unet, self.text_encoder, self.vae = unet, text_encoder, vae
        for module in (unet, text_encoder, vae):
            if module is not None:
                module.to(device=self.device)
                if module.dtype != self.dtype:
                    module.to(dtype=self.dtype)
                module.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.scheduler = scheduler

        self.prediction_type = scheduler.config.prediction_type
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"prior {name!r}: scheduler prediction_type {self.prediction_type!r} is not supported; "
                f"use one of {PREDICTION_TYPES}"
            )
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.alphas_cumprod = scheduler.alphas_cumprod.to(self.device, torch.float32)

        self.pixel_unshuffle = int(pixel_unshuffle)
        if vae is not None:
            self.channels = int(vae.config.latent_channels)
            self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        else:
            self.channels = 3
            self.vae_scale_factor = 1
        r2 = self.pixel_unshuffle**2
        if unet.config.in_channels != self.channels * r2:
            raise ValueError(
                f"prior {name!r}: the UNet takes {unet.config.in_channels} input channels but model space has "
                f"{self.channels} channels x pixel_unshuffle^2 = {self.channels * r2}; fix pixel_unshuffle in "
                f"dreamstill.json or the UNet config"
            )
        if unet.config.out_channels not in (self.channels * r2, 2 * self.channels * r2):
            raise ValueError(
                f"prior {name!r}: the UNet outputs {unet.config.out_channels} channels; expected "
                f"{self.channels * r2} (or twice that with a learned variance)"
            )
        sample_size = unet.config.sample_size
        sample_size = sample_size[0] if isinstance(sample_size, (list, tuple)) else sample_size
        self.image_size = int(image_size or sample_size * self.pixel_unshuffle * self.vae_scale_factor)
        if self.image_size % (self.vae_scale_factor * self.pixel_unshuffle):
            raise ValueError(
                f"prior {name!r}: image_size {self.image_size} must be divisible by "
                f"{self.vae_scale_factor * self.pixel_unshuffle} (VAE factor x pixel_unshuffle)"
            )
        h = self.image_size // self.vae_scale_factor
        self.latent_shape = (self.channels, h, h)

        self.supports_camera = unet.config.class_embed_type == "projection"
        if self.supports_camera and unet.config.projection_class_embeddings_input_dim != CAMERA_FEATURES:
            raise ValueError(
                f"prior {name!r}: the UNet's projection class embedding takes "
                f"{unet.config.projection_class_embeddings_input_dim} inputs, but Dreamstill camera features "
                f"(backend/priors/camera.py) have {CAMERA_FEATURES}"
            )
        length = getattr(tokenizer, "model_max_length", None)
        if not isinstance(length, int) or length > _SANE_MAX_LENGTH:
            length = int(text_encoder.config.max_position_embeddings)
        self.model_max_length = length

    # --- loading ---------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> DiffusersPrior:
        """Load from a local diffusers-layout folder or a hub id (cache first; see ``resolve_prior_folder``).

        Raises PriorNotFoundError when the weights are not here or the folder lacks a required component.
        """
        folder = resolve_prior_folder(name_or_path)
        name = os.fspath(name_or_path)
        missing = [sub for sub in ("unet", "scheduler", "text_encoder", "tokenizer") if not (folder / sub).is_dir()]
        if missing:
            raise PriorNotFoundError(
                f"prior {name!r} at {folder} is incomplete: missing {', '.join(s + '/' for s in missing)}. "
                f"A prior folder needs unet/, scheduler/, text_encoder/, tokenizer/ (and vae/ for latent models). "
                + ("" if Path(name).expanduser().is_dir() else _how_to_get(name))
            )
        extras = read_dreamstill_json(folder)
        device = torch.device(device) if device is not None else default_device()
        dtype = dtype if dtype is not None else default_dtype(device)

        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        with quiet_weight_loading():
            try:
                scheduler = DDPMScheduler.from_config(DDPMScheduler.load_config(folder, subfolder="scheduler"))
                unet = UNet2DConditionModel.from_pretrained(
                    folder, subfolder="unet", torch_dtype=dtype, local_files_only=True
                )
                text_encoder = CLIPTextModel.from_pretrained(
                    folder, subfolder="text_encoder", dtype=dtype, local_files_only=True
                )
                tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
                vae = None
                if (folder / "vae").is_dir():
                    vae = AutoencoderKL.from_pretrained(
                        folder, subfolder="vae", torch_dtype=dtype, local_files_only=True
                    )
            except OSError as error:
                raise PriorNotFoundError(
                    f"prior {name!r} at {folder}: a component could not be loaded ({error}). "
                    + ("Check the folder's files." if Path(name).expanduser().is_dir() else _how_to_get(name))
                ) from error
        return cls(
            unet,
            scheduler,
            text_encoder,
            tokenizer,
            vae,
            pixel_unshuffle=extras["pixel_unshuffle"],
            image_size=extras["image_size"],
            device=device,
            dtype=dtype,
            name=name,
        )

    def __repr__(self) -> str:
        return (
            f"DiffusersPrior({self.name!r}, {self.prediction_type}, latent_shape={self.latent_shape}, "
            f"image_size={self.image_size}, camera={self.supports_camera}, device={self.device}, dtype={self.dtype})"
        )

    # --- text ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> TextEmbedding:
        """Token states (B, L, D) from the text encoder's last layer and its pooled output (B, D), float32."""
        if isinstance(prompts, str):
            prompts = [prompts]
        ids = self.tokenizer(
            list(prompts), padding="max_length", max_length=self.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(self.device)
        out = self.text_encoder(ids)
        return TextEmbedding(out.last_hidden_state.float(), out.pooler_output.float())

    # --- images <-> model space ------------------------------------------------------------------------------
    def _resize(self, rgb: torch.Tensor) -> torch.Tensor:
        if rgb.ndim != 4 or rgb.shape[1] != 3:
            raise ValueError(f"expected rgb of shape (B, 3, H, W) in [0, 1], got {tuple(rgb.shape)}")
        size = self.image_size
        if rgb.shape[-2:] != (size, size):
            rgb = F.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return rgb

    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> z (B, C, h, w) float32, differentiable w.r.t. rgb.

        rgb is resized to image_size (bilinear, antialiased) and mapped to x = 2 rgb - 1. Pixel priors: z = x. Latent
        priors: z = (mu_phi(x) - shift) * scaling_factor, the MEAN of the VAE posterior q_phi(z|x). threestudio uses
        a sample mu + s * n instead; the posterior std s of SD's VAE is tiny (~1e-3 relative), so the mean gives the
        same gradient without injecting extra noise into every step and keeps encode deterministic for tests.
        """
        x = 2 * self._resize(rgb.to(self.device).float()) - 1
        if self.vae is None:
            return x
        mean = self.vae.encode(x.to(self.dtype)).latent_dist.mean.float()
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return (mean - shift) * self.vae.config.scaling_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of encode_images: z -> (B, 3, H, W) in [0, 1] float32 (clamped). Follows the caller's grad mode."""
        z = z.to(self.device).float()
        if self.vae is None:
            x = z
        else:
            shift = getattr(self.vae.config, "shift_factor", None) or 0.0
            x = self.vae.decode((z / self.vae.config.scaling_factor + shift).to(self.dtype)).sample.float()
        return ((x + 1) / 2).clamp(0, 1)

    # --- the score -------------------------------------------------------------------------------------------
    def _timesteps(self, t, batch: int) -> torch.Tensor:
        t = torch.as_tensor(t, device=self.device)
        if t.is_floating_point():
            raise TypeError(f"timesteps must be integers in [0, {self.num_train_timesteps}), got dtype {t.dtype}")
        t = t.long().reshape(-1)
        if t.numel() == 1:
            t = t.expand(batch)
        if t.shape[0] != batch:
            raise ValueError(f"got {t.shape[0]} timesteps for a batch of {batch}; pass one per sample (or a scalar)")
        if (t < 0).any() or (t >= self.num_train_timesteps).any():
            raise ValueError(f"timesteps must lie in [0, {self.num_train_timesteps}), got {t.tolist()}")
        return t

    def unet_forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor | int,
        text: TextEmbedding,
        camera: torch.Tensor | None = None,
        unet: torch.nn.Module | None = None,
        **unet_kwargs,
    ) -> torch.Tensor:
        """The UNet's output at (x_t, t; text, camera), converted to eps_hat, float32 (B, C, h, w).

        Follows the caller's grad mode (VSD trains a LoRA through it). ``unet`` runs another network with the same
        interface in place of ``self.unet`` (e.g. VSD's LoRA'd copy of it), with the same pixel_unshuffle, camera
        features and prediction-type conversion. ``unet_kwargs`` go to the UNet call (e.g.
        cross_attention_kwargs={"scale": ...}, or class_labels to override the camera features).
        Camera-conditioned priors feed class_labels = camera_features(camera) (backend/priors/camera.py).
        """
        unet = self.unet if unet is None else unet
        if x_t.ndim != 4 or x_t.shape[1] != self.channels:
            raise ValueError(
                f"x_t must be (B, {self.channels}, h, w) in this prior's model space, got {tuple(x_t.shape)}"
            )
        r = self.pixel_unshuffle
        if x_t.shape[-1] % r or x_t.shape[-2] % r:
            raise ValueError(f"x_t's height and width must be divisible by pixel_unshuffle={r}, got {tuple(x_t.shape)}")
        b = x_t.shape[0]
        t = self._timesteps(t, b)
        text = text.expand_to(b)
        dtype = getattr(unet, "dtype", self.dtype)  # a VSD LoRA copy may run in float32 under a bf16 prior
        tokens = text.tokens.to(self.device, dtype)
        if tokens.shape[-1] != unet.config.cross_attention_dim:
            raise ValueError(
                f"text embedding width {tokens.shape[-1]} does not match the UNet's cross_attention_dim "
                f"{unet.config.cross_attention_dim}: encode the prompts with this prior's encode_text"
            )
        if self.supports_camera and "class_labels" not in unet_kwargs:
            if camera is None:
                raise ValueError(
                    f"prior {self.name!r} is camera-conditioned: pass camera (B, 4) rows "
                    f"(elevation_deg, azimuth_deg, distance, fov_deg), e.g. Cameras.as_condition()"
                )
            camera = camera.to(self.device, torch.float32)
            if camera.shape != (b, 4):
                raise ValueError(f"camera must be (B, 4) = ({b}, 4), got {tuple(camera.shape)}")
            unet_kwargs["class_labels"] = camera_features(camera).to(dtype)

        x_t = x_t.to(self.device).float()
        x_in = x_t.to(dtype)
        if r > 1:
            x_in = F.pixel_unshuffle(x_in, r)
        out = unet(x_in, t, encoder_hidden_states=tokens, **unet_kwargs).sample
        if out.shape[1] == 2 * x_in.shape[1]:  # learned variance: keep the mean part
            out = out[:, : x_in.shape[1]]
        if r > 1:
            out = F.pixel_shuffle(out, r)
        out = out.float()
        return self.output_to_eps(out, x_t, t)

    def output_to_eps(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Raw network output -> eps_hat by the scheduler's prediction_type (formulas in the module docstring)."""
        if self.prediction_type == "epsilon":
            return out
        alpha, sigma = self.alpha_sigma(t, x_t.ndim)
        if self.prediction_type == "v_prediction":
            return alpha * out + sigma * x_t
        return (x_t - alpha * out) / sigma  # "sample"

    def predict_eps(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        text: TextEmbedding,
        camera: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """eps_hat(x_t; y, t) of the frozen prior, one UNet call, float32, under torch.no_grad (SDS-style methods
        never backprop through the UNet; use ``unet_forward`` for a differentiable call)."""
        with torch.no_grad():
            return self.unet_forward(x_t, t, text, camera)
