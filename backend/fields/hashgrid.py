"""Multiresolution hash-grid encoding (Instant-NGP, Mueller et al. 2022, Sec. 3) in plain PyTorch.

Symbols as in the paper:
    L      levels, F features per level, T = 2^log2_hashmap_size table entries per level,
    N_min  base (coarsest) resolution, N_max finest resolution,
    b      growth factor  b = exp((ln N_max - ln N_min) / (L - 1))        (paper Eq. 3)
    N_l    resolution of level l:  N_l = floor(N_min * b^l)                (paper Eq. 2)

An input x in [0, 1]^3 is scaled per level to p = x * N_l. Its cell is the voxel with integer corner
v0 = floor(p) (clamped to N_l - 1 so x = 1 stays inside) and the local coordinate is w = p - v0 in [0, 1]^3.
Each of the 8 corners v = v0 + (cx, cy, cz) looks up an F-vector in the level's table and the level's feature is the
trilinear blend  sum_c prod_k (cx_k w_k + (1 - cx_k)(1 - w_k)) * table_l[index_l(v)].

index_l is
    dense:   x + y (N_l + 1) + z (N_l + 1)^2              when (N_l + 1)^3 <= T (the level fits: 1:1, no collisions)
    hashed:  (x * 1  xor  y * 2654435761  xor  z * 805459861) mod T     (paper Eq. 4, pi_1 = 1)
A dense level's table holds exactly (N_l + 1)^3 rows, a hashed level's T rows; all levels live in one parameter
(rows offset per level). Products are taken in int64; since T is a power of two, ``mod T`` is ``& (T - 1)`` and
equals the uint32 arithmetic of the reference implementation (the low bits of the product do not depend on the
wrap-around). Table entries are initialised U(-1e-4, 1e-4) (paper Sec. 4).

The output concatenates the levels, level-major: (..., L * F), [level 0 features, level 1 features, ...].

The torch path computes all levels at once per chunk of points (int64 index math, one gather of all 8 L corners,
three lerps) and chunks the points so the temporaries stay in cache. The table is stored feature-major, (F, rows):
gathering columns is several times faster on CPU than gathering rows. When the input needs no gradient (a training
render: only the table learns) the backward is one fused index_add; otherwise it is ordinary autograd, so gradients
with respect to the input and second derivatives work too. ``forward_with_jacobian`` also returns d features / d x
from the same gather (closed-form normals without double backward).

tiny-cuda-nn is used when it imports, CUDA is present and the config's backend allows it (``tcnn_available``).
tcnn's grid convention differs slightly (it offsets positions by half a cell and rounds resolutions up), so a
tcnn-backed encoding is its own parameter layout, not the torch table; pick ``backend="torch"`` for bit-for-bit
portable checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

PRIMES = (1, 2654435761, 805459861)

_BACKENDS = ("auto", "torch", "tcnn")


def tcnn_available() -> bool:
    """True when tiny-cuda-nn imports and a CUDA device is present (never required)."""
    if not torch.cuda.is_available():
        return False
    try:
        import tinycudann  # noqa: F401
    except Exception:  # ImportError, or a broken build raising anything at import
        return False
    return True


@dataclass
class HashGridConfig:
    """Instant-NGP encoding hyper-parameters. ``per_level_scale`` None derives b from ``max_resolution``."""

    n_levels: int = 8
    n_features_per_level: int = 2
    log2_hashmap_size: int = 15
    base_resolution: int = 16
    max_resolution: int = 128
    per_level_scale: float | None = None
    init_scale: float = 1e-4
    backend: str = "auto"  # "auto" (tcnn on CUDA when it imports), "torch", or "tcnn" (must import)
    chunk_size: int = 4096  # points per chunk on the torch path (keeps temporaries in cache)

    def validate(self) -> HashGridConfig:
        def bad(name, why):
            raise ValueError(f"HashGridConfig.{name} {why}")

        if self.n_levels < 1:
            bad("n_levels", f"is {self.n_levels}; use 1 or more levels (8 or 16 is usual)")
        if self.n_features_per_level < 1:
            bad("n_features_per_level", f"is {self.n_features_per_level}; use 1, 2, 4 or 8")
        if not 4 <= self.log2_hashmap_size <= 30:
            bad("log2_hashmap_size", f"is {self.log2_hashmap_size}; use 4..30 (Instant-NGP uses 14..24)")
        if self.base_resolution < 1:
            bad("base_resolution", f"is {self.base_resolution}; use 1 or more (16 is usual)")
        if self.per_level_scale is None and self.max_resolution < self.base_resolution:
            bad("max_resolution", f"is {self.max_resolution}; it must be >= base_resolution ({self.base_resolution})")
        if self.per_level_scale is not None and self.per_level_scale < 1.0:
            bad("per_level_scale", f"is {self.per_level_scale}; use >= 1 (or None to derive it from max_resolution)")
        if self.backend not in _BACKENDS:
            bad("backend", f"is {self.backend!r}; use one of {_BACKENDS}")
        if self.chunk_size < 1:
            bad("chunk_size", f"is {self.chunk_size}; use a positive number of points")
        return self

    @property
    def growth_factor(self) -> float:
        """b = exp((ln N_max - ln N_min) / (L - 1)), or ``per_level_scale`` when given."""
        if self.per_level_scale is not None:
            return float(self.per_level_scale)
        if self.n_levels == 1:
            return 1.0
        return math.exp((math.log(self.max_resolution) - math.log(self.base_resolution)) / (self.n_levels - 1))

    @property
    def resolutions(self) -> list[int]:
        """N_l = floor(N_min * b^l); a 1e-6 slack keeps N_{L-1} = N_max despite rounding in b."""
        b = self.growth_factor
        return [int(math.floor(self.base_resolution * b**level + 1e-6)) for level in range(self.n_levels)]

    @property
    def table_size(self) -> int:
        """T, the entries of a hashed level."""
        return 2**self.log2_hashmap_size

    @property
    def dense_levels(self) -> list[bool]:
        """Level l is indexed densely when its (N_l + 1)^3 vertices fit in T."""
        return [(n + 1) ** 3 <= self.table_size for n in self.resolutions]

    @property
    def level_sizes(self) -> list[int]:
        """Rows of each level's table: (N_l + 1)^3 for dense levels, T for hashed ones."""
        return [(n + 1) ** 3 if d else self.table_size for n, d in zip(self.resolutions, self.dense_levels)]

    @property
    def output_dim(self) -> int:
        return self.n_levels * self.n_features_per_level


# --- the index maps, exposed for tests and for anyone re-implementing the encoding ---------------------------------


def dense_index(corner: torch.Tensor, resolution: int) -> torch.Tensor:
    """x + y (N+1) + z (N+1)^2 for int64 corners (..., 3) of a level with resolution N."""
    corner = corner.long()
    side = resolution + 1
    return corner[..., 0] + corner[..., 1] * side + corner[..., 2] * (side * side)


def spatial_hash(corner: torch.Tensor, log2_hashmap_size: int) -> torch.Tensor:
    """(x * 1 xor y * 2654435761 xor z * 805459861) mod T, T = 2^log2_hashmap_size, for int64 corners (..., 3)."""
    corner = corner.long()
    h = (corner[..., 0] * PRIMES[0]) ^ (corner[..., 1] * PRIMES[1]) ^ (corner[..., 2] * PRIMES[2])
    return h & (2**log2_hashmap_size - 1)


# corner c = cx + 2 cy + 4 cz, the order used for indices and weights alike
CORNERS = torch.tensor([[c & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], dtype=torch.long)


def level_lookup(x: torch.Tensor, config: HashGridConfig, level: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference (one level, unvectorised): row indices within the level's table (n, 8) and trilinear weights (n, 8).

    x: (n, 3) in [0, 1]. Used by the tests to check the fast path; slow but obviously right.
    """
    n_l = config.resolutions[level]
    p = x * n_l
    v0 = p.floor().clamp(0, n_l - 1)
    w = p - v0
    corners = v0.long()[:, None, :] + CORNERS.to(x.device)[None]  # (n, 8, 3)
    if config.dense_levels[level]:
        idx = dense_index(corners, n_l)
    else:
        idx = spatial_hash(corners, config.log2_hashmap_size)
    c = CORNERS.to(x.device, x.dtype)[None]  # (1, 8, 3)
    weights = (c * w[:, None, :] + (1 - c) * (1 - w[:, None, :])).prod(-1)
    return idx, weights


class _TableBlend(torch.autograd.Function):
    """f = trilinear blend of the table columns at ``idx`` (8 corners per level and point), for inputs that need no
    gradient. Backward: grad_table[:, idx_c] += w_c * grad_f with w_c the corner's trilinear weight, one index_add
    instead of autograd's three lerp backwards, three stacks and an index_add."""

    @staticmethod
    def forward(ctx, table, idx, wx, wy, wz):
        n_f = table.shape[0]
        c = table.index_select(1, idx).view(n_f, 2, 2, 2, *wx.shape)
        f = torch.lerp(*torch.lerp(*torch.lerp(*c.unbind(1), wz).unbind(1), wy).unbind(1), wx)
        ctx.save_for_backward(idx, wx, wy, wz)
        ctx.table_shape = table.shape
        return f

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        idx, wx, wy, wz = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        grad = grad.contiguous()  # it arrives as a transposed view of the (n, L F) output gradient
        both = lambda v: torch.stack([1 - v, v])  # noqa: E731  (2, L, n): weights of corner offsets 0 and 1
        w8 = both(wz)[:, None, None] * both(wy)[None, :, None] * both(wx)[None, None, :]  # (2z, 2y, 2x, L, n)
        g = grad[:, None, None, None] * w8[None]  # (F, 2, 2, 2, L, n)
        out = torch.zeros(ctx.table_shape, dtype=grad.dtype, device=grad.device)
        return out.index_add_(1, idx, g.reshape(ctx.table_shape[0], -1)), None, None, None, None


class HashGridEncoding(nn.Module):
    _fused = True  # use _TableBlend when the input needs no gradient (tests switch it off to compare)
    """x (..., 3) in [0, 1]^3 -> (..., L * F) features. Inputs outside the cube are clamped onto it."""

    def __init__(self, config: HashGridConfig | None = None, rng: torch.Generator | None = None):
        super().__init__()
        self.config = cfg = (config or HashGridConfig()).validate()
        self.output_dim = cfg.output_dim
        use_tcnn = cfg.backend == "tcnn" or (cfg.backend == "auto" and tcnn_available())
        self._tcnn = None
        if use_tcnn:
            self._tcnn = self._make_tcnn(cfg)
            return

        sizes = cfg.level_sizes
        offsets = [0]
        for s in sizes:
            offsets.append(offsets[-1] + s)
        # feature-major (F, rows): gathering columns of a (F, S) table is several times faster on CPU than rows
        table = torch.rand(cfg.n_features_per_level, offsets[-1], generator=rng)
        self.table = nn.Parameter((table * 2 - 1) * cfg.init_scale)

        res = cfg.resolutions
        dense = cfg.dense_levels
        self.n_dense = n_dense = sum(dense)
        if any(dense[n_dense:]):
            raise AssertionError("dense levels must be a prefix (resolutions grow with the level)")
        # constants for the vectorised lookup (non-persistent buffers: they follow .to() but are not checkpointed)
        self.register_buffer("_res", torch.tensor(res, dtype=torch.float32), persistent=False)
        idt = torch.long
        self.register_buffer("_offsets", torch.tensor(offsets[:-1], dtype=idt), persistent=False)
        side = torch.tensor([r + 1 for r in res[:n_dense]], dtype=torch.long)
        strides = torch.stack([torch.ones_like(side), side, side * side], -1)  # (L_dense, 3)
        dense_corner = (CORNERS[:, None, :] * strides[None]).sum(-1)  # (8, L_dense)
        self.register_buffer("_dense_stride", strides.to(idt), persistent=False)
        self.register_buffer("_dense_corner", dense_corner.to(idt), persistent=False)
        self.register_buffer("_primes", torch.tensor(PRIMES, dtype=idt), persistent=False)

    @staticmethod
    def _make_tcnn(cfg: HashGridConfig):
        if not tcnn_available():
            raise RuntimeError(
                "HashGridConfig.backend='tcnn' but tiny-cuda-nn does not import or there is no CUDA device; "
                "use backend='auto' or 'torch'"
            )
        import tinycudann as tcnn

        return tcnn.Encoding(
            3,
            {
                "otype": "HashGrid",
                "n_levels": cfg.n_levels,
                "n_features_per_level": cfg.n_features_per_level,
                "log2_hashmap_size": cfg.log2_hashmap_size,
                "base_resolution": cfg.base_resolution,
                "per_level_scale": cfg.growth_factor,
            },
            dtype=torch.float32,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, with_jacobian=False)[0]

    def forward_with_jacobian(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (..., L F) and their Jacobian with respect to x, (..., L F, 3), from the same gather.

        With the corner values c_{zyx} of a cell, a = lerp_z(c_0, c_1), b = lerp_y(a_0, a_1), f = lerp_x(b_0, b_1):
            df/dw_x = b_1 - b_0,   df/dw_y = lerp_x(a_1 - a_0),   df/dw_z = lerp_x(lerp_y(c_1 - c_0)),
        and dw/dx = N_l. Written in ordinary differentiable ops, so a loss on it (normals) trains the table with
        first-order autograd only. Zero where the input was clamped onto the cube is not enforced (in-cube inputs).
        """
        if self._tcnn is not None:
            raise NotImplementedError("tiny-cuda-nn encodings have no Jacobian here; use finite-difference normals")
        return self._run(x, with_jacobian=True)

    @property
    def supports_jacobian(self) -> bool:
        return self._tcnn is None

    def _run(self, x: torch.Tensor, with_jacobian: bool):
        if x.shape[-1] != 3:
            raise ValueError(f"HashGridEncoding expects points (..., 3) in [0, 1]^3, got shape {tuple(x.shape)}")
        lead = x.shape[:-1]
        x = x.reshape(-1, 3).clamp(0.0, 1.0)
        if self._tcnn is not None:
            if not x.is_cuda:
                raise RuntimeError(
                    "this encoding uses tiny-cuda-nn and needs CUDA inputs; build it with backend='torch'"
                )
            return self._tcnn(x).float().reshape(*lead, self.output_dim), None
        x = x.to(self.table.dtype)
        step = self.config.chunk_size
        parts = (
            [self._encode(c, with_jacobian) for c in x.split(step)]
            if x.shape[0] > step
            else [self._encode(x, with_jacobian)]
        )
        out = parts[0][0] if len(parts) == 1 else torch.cat([p[0] for p in parts], 0)
        out = out.reshape(*lead, self.output_dim)
        if not with_jacobian:
            return out, None
        jac = parts[0][1] if len(parts) == 1 else torch.cat([p[1] for p in parts], 0)
        return out, jac.reshape(*lead, self.output_dim, 3)

    def _encode(self, x: torch.Tensor, with_jacobian: bool = False):
        """All levels at once for one chunk: x (n, 3) in [0, 1] -> (n, L * F) [and the Jacobian (n, L * F, 3)].

        Layout is level/corner-major and point-minor, (2_z, 2_y, 2_x, L, n), so every elementwise op runs over
        contiguous memory; trilinear interpolation is three lerps (z, then y, then x).
        """
        cfg = self.config
        n, n_levels, n_dense = x.shape[0], cfg.n_levels, self.n_dense
        res = self._res.to(x.dtype)
        p = res[:, None, None] * x.t()[None]  # (L, 3, n)
        v0 = p.detach().floor().clamp_(min=0).minimum((res - 1)[:, None, None])
        w = p - v0  # local coordinates in [0, 1]; they carry the gradient to x
        v0 = v0.long()

        parts = []
        if n_dense:
            vd = v0[:n_dense]
            st = self._dense_stride
            base = vd[:, 0] * st[:, 0:1] + vd[:, 1] * st[:, 1:2] + vd[:, 2] * st[:, 2:3] + self._offsets[:n_dense, None]
            parts.append(base[None] + self._dense_corner[:, :, None])  # (8, Ld, n)
        if n_dense < n_levels:
            vh = v0[n_dense:]  # (Lh, 3, n)
            pr = self._primes
            hx = vh[:, 0] * pr[0]
            hy = vh[:, 1] * pr[1]
            hz = vh[:, 2] * pr[2]
            hx = torch.stack([hx, hx + pr[0]])  # (2, Lh, n): corner offsets 0 and 1 along x
            hy = torch.stack([hy, hy + pr[1]])
            hz = torch.stack([hz, hz + pr[2]])
            h = (hz[:, None, None] ^ hy[None, :, None] ^ hx[None, None, :]) & (cfg.table_size - 1)
            parts.append(h.reshape(8, n_levels - n_dense, n) + self._offsets[n_dense:, None])
        idx = parts[0] if len(parts) == 1 else torch.cat(parts, 1)  # (8, L, n), corner c = cx + 2 cy + 4 cz

        n_f = cfg.n_features_per_level
        idx = idx.reshape(-1)
        wx, wy, wz = w.unbind(1)  # (L, n) each
        if self._fused and not with_jacobian and not w.requires_grad:
            # the training render's case: gradients reach the table only, so one fused backward (index_add) suffices
            f = _TableBlend.apply(self.table, idx, wx, wy, wz)
            return f.permute(2, 1, 0).reshape(n, n_levels * n_f), None
        c = self.table.index_select(1, idx).view(n_f, 2, 2, 2, n_levels, n)
        # unbind rather than two selects: its backward is one stack instead of two zero-filled copies
        c0, c1 = c.unbind(1)
        a = torch.lerp(c0, c1, wz)  # along z: (F, 2y, 2x, L, n)
        a0, a1 = a.unbind(1)
        b = torch.lerp(a0, a1, wy)  # along y: (F, 2x, L, n)
        b0, b1 = b.unbind(1)
        f = torch.lerp(b0, b1, wx)  # along x: (F, L, n)
        out = f.permute(2, 1, 0).reshape(n, n_levels * n_f)
        if not with_jacobian:
            return out, None
        dz = torch.lerp(*(c1 - c0).unbind(1), wy)  # (F, 2x, L, n)
        dfdz = torch.lerp(*dz.unbind(1), wx)
        dfdy = torch.lerp(*(a1 - a0).unbind(1), wx)
        dfdx = b1 - b0
        jac = torch.stack([dfdx, dfdy, dfdz], -1) * res[None, :, None, None]  # (F, L, n, 3), dw/dx = N_l
        return out, jac.permute(2, 1, 0, 3).reshape(n, n_levels * n_f, 3)

    def level_table(self, level: int) -> torch.Tensor:
        """The rows of one level, (rows, F) (a view into the (F, rows) parameter)."""
        if self._tcnn is not None:
            raise RuntimeError("a tiny-cuda-nn encoding keeps its own parameter layout")
        start = int(self._offsets[level])
        return self.table[:, start : start + self.config.level_sizes[level]].t()
