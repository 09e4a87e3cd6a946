"""Hash grid (index maps, interpolation, gradients), density field (blob init, normals), occupancy, backgrounds."""

import math

import pytest
import torch

from dreamstill.backend.fields import (
    Background,
    BackgroundConfig,
    DensityField,
    DensityFieldConfig,
    Field,
    HashGridConfig,
    HashGridEncoding,
    OccupancyGrid,
    dense_index,
    level_lookup,
    spatial_hash,
    tcnn_available,
    trunc_exp,
)

SMALL = HashGridConfig(
    n_levels=3, n_features_per_level=2, log2_hashmap_size=6, base_resolution=2, max_resolution=8, backend="torch"
)


def rng(seed=0):
    return torch.Generator().manual_seed(seed)


# --- configuration --------------------------------------------------------------------------------------------


def test_default_levels_follow_instant_ngp():
    cfg = HashGridConfig()
    b = math.exp((math.log(128) - math.log(16)) / 7)
    assert cfg.growth_factor == pytest.approx(b)
    assert cfg.resolutions == [math.floor(16 * b**l + 1e-9) for l in range(8)] == [16, 21, 28, 39, 52, 70, 95, 128]
    # (N+1)^3 <= 2^15 = 32768 holds for N = 16, 21, 28 (29^3 = 24389) and fails from N = 39 (40^3 = 64000) on
    assert cfg.dense_levels == [True, True, True, False, False, False, False, False]
    assert cfg.level_sizes == [17**3, 22**3, 29**3] + [2**15] * 5
    assert cfg.output_dim == 16


def test_per_level_scale_overrides_max_resolution():
    cfg = HashGridConfig(n_levels=4, base_resolution=10, per_level_scale=2.0)
    assert cfg.resolutions == [10, 20, 40, 80]


@pytest.mark.parametrize(
    "kwargs",
    [dict(n_levels=0), dict(log2_hashmap_size=2), dict(backend="cuda"), dict(base_resolution=32, max_resolution=16)],
)
def test_bad_config_says_what_to_change(kwargs):
    with pytest.raises(ValueError, match="HashGridConfig"):
        HashGridConfig(**kwargs).validate()


# --- index maps -----------------------------------------------------------------------------------------------


def reference_hash(x: int, y: int, z: int, log2_t: int) -> int:
    """Instant-NGP's hash with uint32 arithmetic, as the CUDA code computes it."""
    h = ((x * 1) & 0xFFFFFFFF) ^ ((y * 2654435761) & 0xFFFFFFFF) ^ ((z * 805459861) & 0xFFFFFFFF)
    return (h & 0xFFFFFFFF) % (2**log2_t)


def test_spatial_hash_matches_uint32_reference():
    corners = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (39, 40, 17), (128, 128, 128), (77, 3, 120), (5000, 1, 9)]
    got = spatial_hash(torch.tensor(corners), 15).tolist()
    assert got == [reference_hash(*c, 15) for c in corners]
    assert spatial_hash(torch.tensor(corners), 19).tolist() == [reference_hash(*c, 19) for c in corners]


def test_dense_index_is_x_major():
    n = 16
    corners = torch.tensor([(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (16, 16, 16), (3, 5, 7)])
    assert dense_index(corners, n).tolist() == [0, 1, 17, 289, 17**3 - 1, 3 + 5 * 17 + 7 * 289]


def direct_level(x: torch.Tensor, table: torch.Tensor, n_l: int, dense: bool, log2_t: int) -> torch.Tensor:
    """Independent per-point re-implementation: python ints, explicit trilinear weights."""
    out = []
    for p in x.tolist():
        pos = [c * n_l for c in p]
        v0 = [min(max(int(math.floor(c)), 0), n_l - 1) for c in pos]
        w = [c - v for c, v in zip(pos, v0)]
        acc = torch.zeros(table.shape[1], dtype=torch.float64)
        for cz in (0, 1):
            for cy in (0, 1):
                for cx in (0, 1):
                    vx, vy, vz = v0[0] + cx, v0[1] + cy, v0[2] + cz
                    if dense:
                        i = vx + vy * (n_l + 1) + vz * (n_l + 1) ** 2
                    else:
                        i = reference_hash(vx, vy, vz, log2_t)
                    wt = (w[0] if cx else 1 - w[0]) * (w[1] if cy else 1 - w[1]) * (w[2] if cz else 1 - w[2])
                    acc += wt * table[i].double()
        out.append(acc)
    return torch.stack(out)


def test_encoding_matches_direct_reimplementation_across_the_hash_switch():
    cfg = HashGridConfig(backend="torch", chunk_size=7)  # several chunks
    enc = HashGridEncoding(cfg, rng=rng(1))
    x = torch.cat(
        [torch.rand(20, 3, generator=rng(2)), torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.5]])]
    )
    out = enc(x).detach().double()
    for level in (0, 2, 3, 7):  # dense, last dense, first hashed, finest
        table = enc.level_table(level).detach()
        want = direct_level(x, table, cfg.resolutions[level], cfg.dense_levels[level], cfg.log2_hashmap_size)
        f = cfg.n_features_per_level
        torch.testing.assert_close(out[:, level * f : (level + 1) * f], want, rtol=1e-5, atol=1e-9)


def test_large_tables_index_like_the_reference():
    # products y * 2654435761 beyond 2^32 and a 2^22 table: the low bits still match uint32 arithmetic
    cfg = HashGridConfig(n_levels=2, base_resolution=16, max_resolution=512, log2_hashmap_size=22, backend="torch")
    enc = HashGridEncoding(cfg, rng=rng(30))
    assert not cfg.dense_levels[1]
    x = torch.rand(10, 3, generator=rng(31))
    want = direct_level(x, enc.level_table(1).detach(), 512, False, 22)
    torch.testing.assert_close(enc(x).detach().double()[:, 2:], want, rtol=1e-5, atol=1e-9)


def test_vectorised_lookup_matches_per_level_reference():
    cfg = HashGridConfig(backend="torch")
    enc = HashGridEncoding(cfg, rng=rng(3))
    x = torch.rand(300, 3, generator=rng(4), dtype=torch.float64)
    enc = enc.double()
    ref = []
    for level in range(cfg.n_levels):
        idx, w = level_lookup(x, cfg, level)
        ref.append((enc.level_table(level)[idx] * w[..., None]).sum(1))
    torch.testing.assert_close(enc(x), torch.cat(ref, -1))


def test_value_at_a_grid_vertex_is_the_table_entry():
    enc = HashGridEncoding(SMALL, rng=rng(5)).double()
    n = SMALL.resolutions[-1]  # a hashed level at this table size
    assert not SMALL.dense_levels[-1]
    v = torch.tensor([[3, 5, 7]])
    out = enc(v.double() / n)[0, -2:]
    row = enc.level_table(SMALL.n_levels - 1)[spatial_hash(v, SMALL.log2_hashmap_size)[0]]
    torch.testing.assert_close(out, row)


def test_inputs_outside_the_cube_are_clamped():
    enc = HashGridEncoding(SMALL, rng=rng(6))
    x = torch.tensor([[-0.5, 0.3, 1.7]])
    torch.testing.assert_close(enc(x), enc(torch.tensor([[0.0, 0.3, 1.0]])))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        enc(torch.zeros(4, 2))


def test_table_initialisation_is_small_uniform_and_seeded():
    a = HashGridEncoding(HashGridConfig(backend="torch"), rng=rng(7))
    b = HashGridEncoding(HashGridConfig(backend="torch"), rng=rng(7))
    assert torch.equal(a.table, b.table)
    assert a.table.abs().max() <= 1e-4 and a.table.abs().max() > 5e-5


# --- gradients ------------------------------------------------------------------------------------------------


def test_gradients_match_finite_differences_float64():
    enc = HashGridEncoding(SMALL, rng=rng(8)).double()
    with torch.no_grad():
        enc.table.normal_(generator=rng(9))  # O(1) entries so the check is sensitive
    x = (torch.rand(6, 3, generator=rng(10), dtype=torch.float64) * 0.9 + 0.05).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x_: enc(x_), (x,), eps=1e-6, atol=1e-5)

    t0 = enc.table.detach().clone().requires_grad_(True)

    def of_table(t_):
        return torch.func.functional_call(enc, {"table": t_}, (x.detach(),))

    assert torch.autograd.gradcheck(of_table, (t0,), eps=1e-6, atol=1e-5)


def test_fused_table_backward_equals_plain_autograd():
    a = HashGridEncoding(HashGridConfig(backend="torch", chunk_size=100), rng=rng(26))
    b = HashGridEncoding(HashGridConfig(backend="torch", chunk_size=100), rng=rng(26))
    b._fused = False
    x = torch.rand(250, 3, generator=rng(27))
    target = torch.randn(250, 16, generator=rng(28))
    for enc in (a, b):
        ((enc(x) - target) ** 2).sum().backward()
    torch.testing.assert_close(a.table.grad, b.table.grad, rtol=1e-5, atol=1e-7)


def test_second_derivatives_exist_for_analytic_normals():
    enc = HashGridEncoding(SMALL, rng=rng(11)).double()
    with torch.no_grad():
        enc.table.normal_(generator=rng(12))
    x = (torch.rand(4, 3, generator=rng(13), dtype=torch.float64) * 0.9 + 0.05).requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda x_: enc(x_).square().sum(-1), (x,), eps=1e-6, atol=1e-4)


def test_tcnn_check_is_false_without_cuda():
    if not torch.cuda.is_available():
        assert tcnn_available() is False
        with pytest.raises(RuntimeError, match="tiny-cuda-nn"):
            HashGridEncoding(HashGridConfig(backend="tcnn"))


def test_trunc_exp_clamps_its_gradient():
    x = torch.tensor([1.0, 20.0], requires_grad=True)
    y = trunc_exp(x)
    y.sum().backward()
    torch.testing.assert_close(y.detach(), torch.exp(torch.tensor([1.0, 20.0])))
    torch.testing.assert_close(x.grad, torch.exp(torch.tensor([1.0, 15.0])))


# --- density field --------------------------------------------------------------------------------------------


def small_field(**kw) -> DensityField:
    return DensityField(DensityFieldConfig(grid=HashGridConfig(backend="torch"), **kw), rng=rng(14))


def test_blob_makes_the_centre_dense_and_the_corners_empty():
    f = small_field()
    x = torch.tensor([[0.0, 0.0, 0.0], [0.7, 0.7, 0.0], [1.0, 1.0, 1.0], [-0.9, 0.0, 0.0]])
    density, albedo = f(x)
    assert density[0] > 8.0  # softplus(10 + O(0.1)) ~ 10
    assert density[1] < 1e-3  # |x| = 0.99: softplus(10 (1 - 1.98)) ~ 5e-5
    assert density[2] == 0.0  # outside the bound ball
    assert density[3] < 1e-3
    assert ((albedo > 0) & (albedo < 1)).all() and albedo.shape == (4, 3)
    torch.testing.assert_close(f.density(x), density)


def test_dreamfusion_blob_and_trunc_exp_variant():
    f = small_field(density_bias="blob_dreamfusion", blob_density=5.0, blob_radius=0.2, density_activation="trunc_exp")
    bias = f.density_bias(torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.0, 0.0]]))
    torch.testing.assert_close(bias, torch.tensor([5.0, 5.0 * math.exp(-0.5)]))
    density = f.density(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.9]]))
    assert density[0] > 50 * density[1]


def test_field_config_errors():
    with pytest.raises(ValueError, match="density_bias"):
        DensityFieldConfig(density_bias="blob").validate()
    with pytest.raises(ValueError, match="density activation"):
        DensityFieldConfig(density_activation="sigmoid").validate()
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        small_field()(torch.zeros(3))


def test_seeded_fields_are_identical():
    a, b = small_field(), small_field()
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


class GaussianBlob(Field):
    """density = 10 exp(-|x - c|^2 / (2 s^2)): normals point away from c."""

    def __init__(self, centre=(0.1, -0.2, 0.05), s=0.3):
        super().__init__()
        self.bound = 1.0
        self.c = torch.tensor(centre, dtype=torch.float64)
        self.s = s

    def forward(self, x):
        r2 = ((x - self.c.to(x)) ** 2).sum(-1)
        return 10 * torch.exp(-r2 / (2 * self.s**2)), torch.ones_like(x) * 0.5


@pytest.mark.parametrize("method", ["autograd", "finite_difference"])
def test_normals_point_down_the_density_gradient(method):
    f = GaussianBlob()
    x = torch.rand(50, 3, generator=rng(15), dtype=torch.float64) - 0.5
    want = torch.nn.functional.normalize(x - f.c, dim=-1)
    got = f.normals(x, method=method, eps=1e-4)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_normals_of_the_hash_field_carry_gradients_to_the_table():
    f = small_field()
    x = torch.rand(64, 3, generator=rng(16)) - 0.5
    for method in ("analytic", "autograd", "finite_difference"):
        f.zero_grad(set_to_none=True)
        n = f.normals(x, method=method)
        assert torch.isfinite(n).all()
        (n[:, 2]).sum().backward()
        assert f.encoding.table.grad is not None and f.encoding.table.grad.abs().sum() > 0
    with torch.no_grad():
        assert not f.normals(x, method="autograd").requires_grad
    torch.testing.assert_close(f.normals(x), f.normals(x, method="autograd"), atol=1e-5, rtol=1e-5)


def test_unknown_normal_method():
    with pytest.raises(ValueError, match="finite_difference"):
        small_field().normals(torch.zeros(2, 3), method="sobel")


# --- occupancy grid -------------------------------------------------------------------------------------------


def test_occupancy_grid_marks_a_ball_and_skips_the_rest():
    grid = OccupancyGrid(bound=1.0, resolution=16, threshold=0.1, update_every=4)
    assert grid.occupied.all()  # nothing measured yet: everything counts
    ball = lambda x: 5.0 * (x.norm(dim=-1) < 0.4).float()  # noqa: E731
    grid.update(ball)
    q = grid.query(torch.tensor([[0.0, 0.0, 0.0], [0.35, 0.0, 0.0], [0.9, 0.9, 0.0], [2.0, 0.0, 0.0]]))
    assert q.tolist() == [True, True, False, False]
    assert 0.02 < grid.occupied_fraction < 0.15  # ball of radius 0.4 (+1 cell dilation) in a 2^3 box
    calls = [grid.maybe_update(ball) for _ in range(5)]
    assert calls == [True, False, False, False, True]


def test_occupancy_grid_of_an_empty_field_skips_nothing():
    grid = OccupancyGrid(bound=1.0, resolution=8, threshold=0.1)
    grid.update(lambda x: torch.zeros(x.shape[0]))
    assert grid.occupied.all() and int(grid.updates) == 1


def test_occupancy_state_round_trips_through_state_dict():
    f = small_field()
    f.occupancy.update(f.density)
    g = small_field()
    g.load_state_dict(f.state_dict())
    assert torch.equal(g.occupancy.occupied, f.occupancy.occupied) and int(g.occupancy.updates) == 1


# --- backgrounds ----------------------------------------------------------------------------------------------


def test_solid_background_is_its_colour():
    bg = Background(color=(0.2, 0.4, 0.6))
    out = bg(torch.randn(2, 3, 4, 3))
    assert out.shape == (2, 3, 4, 3)
    torch.testing.assert_close(out[1, 2, 3], torch.tensor([0.2, 0.4, 0.6]))
    assert list(Background().parameters()) == []
    torch.testing.assert_close(Background()(torch.randn(5, 3)), torch.ones(5, 3))


def test_learned_background_starts_near_its_colour_and_learns():
    bg = Background(BackgroundConfig(kind="learned", color=(1.0, 1.0, 1.0)), rng=rng(17))
    dirs = torch.nn.functional.normalize(torch.randn(1, 8, 8, 3, generator=rng(18)), dim=-1)
    out = bg(dirs)
    assert out.shape == (1, 8, 8, 3) and (out > 0.95).all()
    opt = torch.optim.Adam(bg.parameters(), lr=0.02)
    start = (bg(dirs) - 0.3).abs().mean().item()
    for _ in range(40):
        loss = (bg(dirs) - 0.3).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (bg(dirs) - 0.3).abs().mean() < 0.5 * start


def test_background_config_errors():
    with pytest.raises(ValueError, match="kind"):
        Background(kind="sky")
    with pytest.raises(ValueError, match="color"):
        Background(color=(2.0, 0.0, 0.0))


def test_closed_form_density_gradient_matches_autograd_float64():
    for act, bias in (("softplus", "blob_magic3d"), ("trunc_exp", "blob_dreamfusion"), ("softplus", "none")):
        cfg = DensityFieldConfig(
            grid=HashGridConfig(backend="torch", chunk_size=64),
            density_activation=act,
            density_bias=bias,
            n_hidden_layers=2,
            hidden_dim=16,
        )
        f = DensityField(cfg, rng=rng(20)).double()
        with torch.no_grad():
            f.encoding.table.normal_(std=0.5, generator=rng(21))
        x = (torch.rand(150, 3, generator=rng(22), dtype=torch.float64) - 0.5) * 1.6
        density, albedo, grad = f.forward_with_gradient(x)
        torch.testing.assert_close(density, f.density(x))
        want = f.density_gradient(x, method="autograd")
        torch.testing.assert_close(grad, want, rtol=1e-9, atol=1e-9 * want.abs().max().item())
        # a loss on the normals trains the parameters exactly as double backward would
        f.zero_grad()
        (-torch.nn.functional.normalize(grad, dim=-1))[:, 0].sum().backward()
        first = [p.grad.clone() for p in f.parameters()]
        f.zero_grad()
        f.normals(x, method="autograd")[:, 0].sum().backward()
        for a, b in zip(first, (p.grad for p in f.parameters())):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)


def test_encoding_jacobian_matches_autograd():
    enc = HashGridEncoding(HashGridConfig(backend="torch", chunk_size=40), rng=rng(23)).double()
    with torch.no_grad():
        enc.table.normal_(generator=rng(24))
    x = torch.rand(100, 3, generator=rng(25), dtype=torch.float64)
    out, jac = enc.forward_with_jacobian(x)
    torch.testing.assert_close(out, enc(x))
    want = torch.autograd.functional.jacobian(lambda y: enc(y).sum(0), x)  # (L F, n, 3)
    torch.testing.assert_close(jac, want.permute(1, 0, 2))
