"""The frozen 2D diffusion model as score distillation sees it.

Notation (DDPM / the papers): x_t = alpha_t * x_0 + sigma_t * eps, with alpha_t = sqrt(alphas_cumprod[t]) and
sigma_t = sqrt(1 - alphas_cumprod[t]); t is an integer timestep in [0, num_train_timesteps). ``predict_eps`` always
returns an epsilon prediction eps_hat(x_t; y, t), whatever the network predicts (v-prediction is converted:
eps = alpha_t * v + sigma_t * x_t).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TextEmbedding:
    """Encoded prompt(s): token-level states (B, L, D) and a pooled vector (B, D') where the encoder has one."""

    tokens: torch.Tensor
    pooled: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def repeat(self, n: int) -> TextEmbedding:
        """Each row repeated n times in place: (B, ...) -> (B*n, ...) with rows b*n..b*n+n-1 equal to row b."""
        pooled = None if self.pooled is None else self.pooled.repeat_interleave(n, 0)
        return TextEmbedding(self.tokens.repeat_interleave(n, 0), pooled)

    def expand_to(self, n: int) -> TextEmbedding:
        """A single embedding (B=1) broadcast to a batch of n."""
        if len(self) == n:
            return self
        if len(self) != 1:
            raise ValueError(f"cannot expand a batch of {len(self)} text embeddings to {n}")
        return self.repeat(n)

    @staticmethod
    def cat(parts: list[TextEmbedding]) -> TextEmbedding:
        pooled = None if any(p.pooled is None for p in parts) else torch.cat([p.pooled for p in parts])
        return TextEmbedding(torch.cat([p.tokens for p in parts]), pooled)


class Prior:
    """Interface every prior implements (the diffusers-backed one, the built-in toy-world one, analytic toys).

    Attributes
    ----------
    device, dtype: where and in what precision the network runs (the model-space tensors handed to the methods
        are float32; the prior casts at its boundary).
    alphas_cumprod: (T,) float32 tensor on ``device``: the noise schedule, bar-alpha_t.
    num_train_timesteps: T.
    image_size: the render resolution the prior is trained for (pixels).
    latent_shape: (C, h, w) of ``encode_images`` output at ``image_size``.
    supports_camera: True when ``predict_eps`` uses the ``camera`` argument (MVDream-style conditioning).
    """

    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    alphas_cumprod: torch.Tensor
    num_train_timesteps: int = 1000
    image_size: int = 64
    latent_shape: tuple[int, int, int] = (3, 64, 64)
    supports_camera: bool = False

    # --- text -----------------------------------------------------------------------------------------------
    def encode_text(self, prompts: list[str]) -> TextEmbedding:
        """Encode a list of prompts; "" gives the unconditional embedding used for classifier-free guidance."""
        raise NotImplementedError

    # --- images <-> model space ---------------------------------------------------------------------------------
    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> model-space z (B, C, h, w), differentiable w.r.t. rgb.

        Pixel priors return 2*rgb - 1 (resized to image_size); latent priors return VAE latents * scaling_factor.
        """
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Model space -> (B, 3, H, W) in [0, 1] (for previews and the 2D harness)."""
        raise NotImplementedError

    # --- the score -------------------------------------------------------------------------------------------
    def predict_eps(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        text: TextEmbedding,
        camera: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """eps_hat(x_t; y, t) for a batch: x_t (B, C, h, w), t (B,) long, text with B rows, camera (B, 4) or None.

        ``camera`` rows are (elevation_deg, azimuth_deg, distance, fov_deg) as produced by render.cameras; priors
        without camera conditioning ignore it. Returns float32 (B, C, h, w). One network call for the whole batch,
        so callers put the conditional and unconditional halves of CFG (or ASD's three terms) in one batch.
        """
        raise NotImplementedError

    def predict_eps_cfg(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        cond: TextEmbedding,
        uncond: TextEmbedding,
        guidance: float,
        camera: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Classifier-free guidance in one batched call.

        Returns (eps_cfg, eps_cond, eps_uncond) with eps_cfg = eps_uncond + s * (eps_cond - eps_uncond).
        """
        b = x_t.shape[0]
        cam = None if camera is None else torch.cat([camera, camera])
        eps = self.predict_eps(
            torch.cat([x_t, x_t]), torch.cat([t, t]), TextEmbedding.cat([cond.expand_to(b), uncond.expand_to(b)]), cam
        )
        eps_cond, eps_uncond = eps.chunk(2)
        return eps_uncond + guidance * (eps_cond - eps_uncond), eps_cond, eps_uncond

    # --- schedule helpers ------------------------------------------------------------------------------------
    def alpha_sigma(self, t: torch.Tensor, ndim: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha_t, sigma_t) for integer timesteps t, shaped to broadcast against a (B, C, h, w) tensor."""
        abar = self.alphas_cumprod.to(t.device)[t].float()
        shape = (-1,) + (1,) * (ndim - 1)
        return abar.sqrt().view(shape), (1 - abar).sqrt().view(shape)

    def add_noise(self, z: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = alpha_t z + sigma_t eps."""
        alpha, sigma = self.alpha_sigma(t, z.ndim)
        return alpha * z + sigma * eps
