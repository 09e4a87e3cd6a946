"""The toy world: primitives, colours, a caption grammar, signed distances and a batched sphere tracer.

Everything here is ground truth: a caption parses to exactly one :class:`Scene`, the scene has a signed distance
function phi(x) (negative inside; exact outside and on the surface, which is what sphere tracing needs; the
polyhedra's is a bound outside, the cone's too small inside near its axis: ``exact_sdf`` has the exact distances that
geometry metrics need), an albedo field, and a renderer that draws it from the cameras of ``render.cameras`` on a
white background.

World frame: Z up (as ``render.cameras``). Every primitive is centred at its local origin, about one unit across, with
its vertical extent symmetric about z = 0 (half-height ``h``). Compositions:

* ``"a red cube on top of a blue sphere"``: the first object rests on the second (their bounding boxes touch);
* ``"a green cone next to a yellow torus"``: side by side along the world Y axis, the first object at -Y (on the left
  of the front view, azimuth 0, which looks from +X) and the second at +Y;

both scaled by a common factor so the pair fits the camera frustum, then shifted so the scene's bounding box is
centred at the origin.

Grammar::

    prompt   := object | object " on top of " object | object " next to " object
    object   := article " " colour " " shape        (article "an" before a vowel, else "a")

Shading (as the distillation renderer does it): c = albedo * (k_a + k_d * max(0, n . l)), clamped to [0, 1], with
the light direction l fixed in the camera frame (from the upper left, towards the viewer), optionally jittered.
"""

from __future__ import annotations

import functools
import math
import random
import re
from dataclasses import dataclass

import torch

from ...render.cameras import Cameras

# ------------------------------------------------------------------------------------------------------------------
# vocabulary
# ------------------------------------------------------------------------------------------------------------------

SHAPES: tuple[str, ...] = ("sphere", "cube", "cylinder", "cone", "torus", "capsule", "pyramid", "octahedron")
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.10, 0.10),
    "orange": (0.96, 0.50, 0.06),
    "yellow": (0.95, 0.85, 0.10),
    "green": (0.12, 0.66, 0.16),
    "cyan": (0.10, 0.78, 0.84),
    "blue": (0.12, 0.22, 0.90),
    "purple": (0.52, 0.16, 0.74),
    "pink": (0.98, 0.46, 0.70),
}
RELATIONS: tuple[str, ...] = ("on top of", "next to")

# (half-height along z, half-width along y) of each primitive at scale 1: used to place compositions.
_EXTENT: dict[str, tuple[float, float]] = {
    "sphere": (0.5, 0.5),
    "cube": (0.42, 0.42),
    "cylinder": (0.5, 0.42),
    "cone": (0.55, 0.5),
    "torus": (0.16, 0.56),
    "capsule": (0.58, 0.3),
    "pyramid": (0.45, 0.5),
    "octahedron": (0.55, 0.55),
}
COMPOSITION_SCALE = {"on top of": 0.65, "next to": 0.68}
NEXT_TO_GAP = 0.12  # gap between the two objects of "next to", in scaled units

# geometry parameters of the primitives (scale 1)
SPHERE_R = 0.5
CUBE_HALF = 0.42
CYL_R, CYL_H = 0.42, 0.5
CONE_R, CONE_H = 0.5, 0.55  # base radius; half-height (base at z=-h, apex at z=+h)
TORUS_R, TORUS_r = 0.40, 0.16  # lying flat in the xy plane
CAPSULE_R, CAPSULE_H = 0.3, 0.28  # radius; half-length of the axis segment
PYRAMID_HALF, PYRAMID_H = 0.5, 0.45  # square base half-size; half-height (base at z=-h, apex at z=+h)
OCTA_R = 0.55  # vertex distance (standing on a vertex)


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; choose one of {', '.join(SHAPES)}")
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; choose one of {', '.join(COLOURS)}")


@dataclass(frozen=True)
class Placement:
    """One object placed in the world: phi(x) = scale * phi_shape((x - centre) / scale)."""

    shape: str
    colour: str
    centre: tuple[float, float, float]
    scale: float


@dataclass(frozen=True)
class Scene:
    """One object, or two objects in a relation ("on top of": first rests on second; "next to": first at -Y)."""

    objects: tuple[SceneObject, ...]
    relation: str | None = None

    def __post_init__(self):
        if len(self.objects) == 1:
            if self.relation is not None:
                raise ValueError("a single-object scene has relation None")
        elif len(self.objects) == 2:
            if self.relation not in RELATIONS:
                raise ValueError(f"unknown relation {self.relation!r}; choose one of {RELATIONS}")
        else:
            raise ValueError(f"a scene holds 1 or 2 objects, got {len(self.objects)}")

    @staticmethod
    def single(colour: str, shape: str) -> Scene:
        return Scene((SceneObject(colour, shape),))

    @staticmethod
    def pair(colour1: str, shape1: str, relation: str, colour2: str, shape2: str) -> Scene:
        return Scene((SceneObject(colour1, shape1), SceneObject(colour2, shape2)), relation)

    @property
    def is_composition(self) -> bool:
        return len(self.objects) == 2

    def placements(self) -> list[Placement]:
        """Where each object sits (centre, scale) so that the scene's bounding box is centred at the origin."""
        if not self.is_composition:
            o = self.objects[0]
            return [Placement(o.shape, o.colour, (0.0, 0.0, 0.0), 1.0)]
        a, b = self.objects
        s = COMPOSITION_SCALE[self.relation]
        (ha, wa), (hb, wb) = _EXTENT[a.shape], _EXTENT[b.shape]
        if self.relation == "on top of":
            # b at z_b, a at z_b + s*(hb + ha); box spans [z_b - s*hb, z_b + s*(hb + 2ha)] -> centre it
            z_b = -s * ha
            z_a = z_b + s * (hb + ha)
            ca, cb = (0.0, 0.0, z_a), (0.0, 0.0, z_b)
        else:
            width = s * (2 * wa + 2 * wb) + NEXT_TO_GAP
            y_a = -width / 2 + s * wa
            y_b = width / 2 - s * wb
            ca, cb = (0.0, y_a, 0.0), (0.0, y_b, 0.0)
        return [Placement(a.shape, a.colour, ca, s), Placement(b.shape, b.colour, cb, s)]


# ------------------------------------------------------------------------------------------------------------------
# grammar
# ------------------------------------------------------------------------------------------------------------------


def _article(colour: str) -> str:
    return "an" if colour[0] in "aeiou" else "a"


def _object_text(o: SceneObject) -> str:
    return f"{_article(o.colour)} {o.colour} {o.shape}"


def caption(scene: Scene) -> str:
    """The grammar's caption of a scene: 'a red cube', 'an orange cone next to a blue torus'."""
    if not scene.is_composition:
        return _object_text(scene.objects[0])
    return f"{_object_text(scene.objects[0])} {scene.relation} {_object_text(scene.objects[1])}"


_OBJ_RE = r"(?:a|an)\s+(\w+)\s+(\w+)"
_PROMPT_RE = re.compile(rf"^\s*{_OBJ_RE}(?:\s+(on\s+top\s+of|next\s+to)\s+{_OBJ_RE})?\s*\.?\s*$", re.IGNORECASE)


def parse_prompt(text: str) -> Scene:
    """Parse a caption of the grammar (case and extra spaces are forgiven) into its Scene.

    Raises ValueError naming what is wrong, e.g. an unknown colour or shape, or text outside the grammar.
    """
    m = _PROMPT_RE.match(text)
    if m is None:
        raise ValueError(
            f"{text!r} is not a toy-world prompt; write 'a <colour> <shape>' or "
            f"'a <colour> <shape> on top of|next to a <colour> <shape>' with colours {', '.join(COLOURS)} "
            f"and shapes {', '.join(SHAPES)}"
        )
    c1, s1, rel, c2, s2 = (g.lower() if g else g for g in m.groups())
    if rel is None:
        return Scene((SceneObject(c1, s1),))
    return Scene((SceneObject(c1, s1), SceneObject(c2, s2)), " ".join(rel.split()))


def all_scenes() -> list[Scene]:
    """Every scene of the grammar in a fixed order: singles first, then each relation's pairs of distinct objects."""
    objs = [SceneObject(c, s) for s in SHAPES for c in COLOURS]
    out = [Scene((o,)) for o in objs]
    for rel in RELATIONS:
        out += [Scene((a, b), rel) for a in objs for b in objs if a != b]
    return out


def all_prompts() -> list[str]:
    """Every prompt of the grammar (8 x 8 singles + 2 x 64 x 63 compositions = 8,128), in a fixed order."""
    return [caption(s) for s in all_scenes()]


def single_prompts() -> list[str]:
    return [caption(s) for s in all_scenes() if not s.is_composition]


def split_prompts(seed: int = 0, heldout_fraction: float = 0.1) -> tuple[list[str], list[str]]:
    """(train, heldout) prompts. All singles are in train; a random ``heldout_fraction`` of the compositions is held
    out, with every part of a held-out composition (each coloured object in its role, and the relation) seen in some
    training composition, so held-out prompts test new combinations of known parts only."""
    if not 0 <= heldout_fraction < 1:
        raise ValueError(f"heldout_fraction is {heldout_fraction}; use a value in [0, 1)")
    scenes = all_scenes()
    singles = [s for s in scenes if not s.is_composition]
    comps = [s for s in scenes if s.is_composition]
    rng = random.Random(seed)
    order = list(range(len(comps)))
    rng.shuffle(order)
    n_held = int(round(heldout_fraction * len(comps)))
    held_idx = set(order[:n_held])
    train = [s for i, s in enumerate(comps) if i not in held_idx]
    seen = {(s.objects[0], "first") for s in train} | {(s.objects[1], "second") for s in train}
    seen_rel = {s.relation for s in train}
    held = []
    for i in sorted(held_idx):
        s = comps[i]
        if (s.objects[0], "first") in seen and (s.objects[1], "second") in seen and s.relation in seen_rel:
            held.append(s)
        else:  # a part never seen in training: keep the scene in train instead
            train.append(s)
    return [caption(s) for s in singles + train], [caption(s) for s in held]


def sample_scenes(
    n: int,
    rng: torch.Generator,
    prompts: list[str] | None = None,
    single_fraction: float = 0.4,
) -> list[Scene]:
    """n random scenes: a single object with probability ``single_fraction``, else a composition, each uniform
    among the given prompts (default: all prompts)."""
    if prompts is None:
        prompts = all_prompts()
    scenes = [_parse_cached(p) for p in prompts]
    singles = [s for s in scenes if not s.is_composition]
    comps = [s for s in scenes if s.is_composition]
    if not singles or not comps:
        pool = singles or comps
        idx = torch.randint(len(pool), (n,), generator=rng).tolist()
        return [pool[i] for i in idx]
    pick_single = (torch.rand(n, generator=rng) < single_fraction).tolist()
    i_single = torch.randint(len(singles), (n,), generator=rng).tolist()
    i_comp = torch.randint(len(comps), (n,), generator=rng).tolist()
    return [singles[a] if p else comps[b] for p, a, b in zip(pick_single, i_single, i_comp)]


@functools.lru_cache(maxsize=16384)
def _parse_cached(text: str) -> Scene:
    return parse_prompt(text)


# ------------------------------------------------------------------------------------------------------------------
# signed distances of the primitives (local frame, scale 1); p is (..., 3)
# ------------------------------------------------------------------------------------------------------------------


def _sd_sphere(p):
    return p.norm(dim=-1) - SPHERE_R


def _sd_box(p, half):
    """Exact box SDF: |max(q, 0)| + min(max_i q_i, 0) with q = |p| - half."""
    q = p.abs() - half
    return q.clamp_min(0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0)


def _sd_rect2(rho, z, half_r, half_z):
    """Exact 2D distance to the rectangle |rho| <= half_r, |z| <= half_z (a solid of revolution's profile)."""
    q = torch.stack([rho.abs() - half_r, z.abs() - half_z], -1)
    return q.clamp_min(0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0)


def _seg_dist2(px, py, ax, ay, bx, by):
    """Squared distance from points (px, py) to the segment a-b, and the signed side (cross product)."""
    ex, ey = bx - ax, by - ay
    wx, wy = px - ax, py - ay
    along = ((wx * ex + wy * ey) / (ex * ex + ey * ey)).clamp(0, 1)
    dx, dy = wx - along * ex, wy - along * ey
    return dx * dx + dy * dy, ex * wy - ey * wx


def _sd_convex_polygon2(x, y, verts):
    """Exact signed distance to a convex polygon given counter-clockwise: min distance to the edges, negative inside
    (inside = on the left of every edge)."""
    d2 = None
    inside = None
    n = len(verts)
    for i in range(n):
        (ax, ay), (bx, by) = verts[i], verts[(i + 1) % n]
        e2, side = _seg_dist2(x, y, ax, ay, bx, by)
        d2 = e2 if d2 is None else torch.minimum(d2, e2)
        left = side >= 0
        inside = left if inside is None else inside & left
    d = d2.sqrt()
    return torch.where(inside, -d, d)


def _sd_cylinder(p):
    return _sd_rect2(p[..., :2].norm(dim=-1), p[..., 2], CYL_R, CYL_H)


_CONE_PROFILE = ((0.0, -CONE_H), (CONE_R, -CONE_H), (0.0, CONE_H))


def _sd_cone(p):
    """Solid of revolution: the exact 2D distance to the profile triangle in the (rho, z) half-plane. The triangle
    touches the axis, so mirroring it across rho = 0 adds nothing nearer; the 2D distance is the 3D distance."""
    rho = p[..., :2].norm(dim=-1)
    return _sd_convex_polygon2(rho, p[..., 2], _CONE_PROFILE)


def _sd_torus(p):
    q = torch.stack([p[..., :2].norm(dim=-1) - TORUS_R, p[..., 2]], -1)
    return q.norm(dim=-1) - TORUS_r


def _sd_capsule(p):
    z = p[..., 2]
    dz = z - z.clamp(-CAPSULE_H, CAPSULE_H)
    return torch.sqrt(p[..., 0] ** 2 + p[..., 1] ** 2 + dz**2) - CAPSULE_R


def _planes_bound(p, normals, offsets):
    """Convex polyhedron {x : n_i . x <= o_i} (unit n_i): max_i (n_i . p - o_i). Exact inside and on the surface,
    a lower bound on the distance outside (safe for sphere tracing)."""
    return (p @ normals.to(p).T - offsets.to(p)).max(dim=-1).values


def _pyramid_planes():
    # square base at z=-H (half-size a), apex at (0,0,H); four side planes plus the base
    a, H = PYRAMID_HALF, PYRAMID_H
    normals, offsets = [], []
    for sx, sy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        # plane through (sx*a, sy*a, -H) and the apex: normal ~ (sx*2H, sy*2H, a)
        n = torch.tensor([sx * 2 * H, sy * 2 * H, a], dtype=torch.float64)
        n = n / n.norm()
        offsets.append(float(n @ torch.tensor([0.0, 0.0, H], dtype=torch.float64)))
        normals.append(n)
    normals.append(torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64))
    offsets.append(H)
    return torch.stack(normals).float(), torch.tensor(offsets).float()


def _octa_planes():
    s = 1 / math.sqrt(3)
    normals = torch.tensor(
        [[sx * s, sy * s, sz * s] for sx in (1, -1) for sy in (1, -1) for sz in (1, -1)], dtype=torch.float32
    )
    return normals, torch.full((8,), OCTA_R * s)


_PYR = _pyramid_planes()
_OCT = _octa_planes()


def _sd_pyramid(p):
    return _planes_bound(p, *_PYR)


def _sd_octahedron(p):
    return _planes_bound(p, *_OCT)


# exact everywhere: sphere, cube, cylinder, torus, capsule; the cone is exact outside (inside, near its axis, -rho is
# smaller than the distance), the polyhedra exact inside (outside a bound); exact_sdf.py has them all exact
_PRIMITIVE_SDF = {
    "sphere": _sd_sphere,
    "cube": lambda p: _sd_box(p, CUBE_HALF),
    "cylinder": _sd_cylinder,
    "cone": _sd_cone,
    "torus": _sd_torus,
    "capsule": _sd_capsule,
    "pyramid": _sd_pyramid,
    "octahedron": _sd_octahedron,
}


def primitive_sdf(shape: str, points: torch.Tensor) -> torch.Tensor:
    """phi_shape(x) at scale 1, centred at the origin: (..., 3) -> (...)."""
    if shape not in _PRIMITIVE_SDF:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
    return _PRIMITIVE_SDF[shape](points)


# ------------------------------------------------------------------------------------------------------------------
# scenes as batched tensors
# ------------------------------------------------------------------------------------------------------------------

_FAR = 1e3  # distance reported for an empty object slot


@dataclass
class PackedScenes:
    """B scenes as tensors with 2 object slots: shape ids (B,2), albedo (B,2,3), centre (B,2,3), scale (B,2),
    present (B,2) bool."""

    shape_id: torch.Tensor
    albedo: torch.Tensor
    centre: torch.Tensor
    scale: torch.Tensor
    present: torch.Tensor

    @staticmethod
    def from_scenes(scenes: list[Scene], device="cpu") -> PackedScenes:
        b = len(scenes)
        shape_id = torch.zeros(b, 2, dtype=torch.long)
        albedo = torch.ones(b, 2, 3)
        centre = torch.zeros(b, 2, 3)
        scale = torch.ones(b, 2)
        present = torch.zeros(b, 2, dtype=torch.bool)
        for i, s in enumerate(scenes):
            for k, pl in enumerate(s.placements()):
                shape_id[i, k] = SHAPES.index(pl.shape)
                albedo[i, k] = torch.tensor(COLOURS[pl.colour])
                centre[i, k] = torch.tensor(pl.centre)
                scale[i, k] = pl.scale
                present[i, k] = True
        return PackedScenes(*(x.to(device) for x in (shape_id, albedo, centre, scale, present)))

    def flat_slot_sdf(self, points: torch.Tensor, scene_index: torch.Tensor) -> torch.Tensor:
        """points (M, 3), each belonging to scene ``scene_index`` (M,) -> per-slot signed distances (M, 2)."""
        out = []
        for k in range(2):
            centre = self.centre[scene_index, k]
            scale = self.scale[scene_index, k]
            ids = torch.where(self.present[scene_index, k], self.shape_id[scene_index, k], -1)
            local = (points - centre) / scale[:, None]
            d = torch.full(points.shape[:1], _FAR, device=points.device, dtype=points.dtype)
            for sid in torch.unique(ids).tolist():
                if sid < 0:
                    continue
                sel = ids == sid
                if bool(sel.all()):
                    d = primitive_sdf(SHAPES[sid], local) * scale
                else:
                    d[sel] = primitive_sdf(SHAPES[sid], local[sel]) * scale[sel]
            out.append(d)
        return torch.stack(out, -1)

    def slot_sdf(self, points: torch.Tensor) -> torch.Tensor:
        """points (B, N, 3) -> per-slot signed distances (B, N, 2)."""
        b, n = points.shape[:2]
        idx = torch.arange(b, device=points.device).repeat_interleave(n)
        return self.flat_slot_sdf(points.reshape(-1, 3), idx).reshape(b, n, 2)

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        """Union of the objects: phi(x) = min_k phi_k(x); points (B, N, 3) -> (B, N)."""
        return self.slot_sdf(points).min(-1).values

    def albedo_at(self, points: torch.Tensor) -> torch.Tensor:
        """Albedo of the nearest object: points (B, N, 3) -> (B, N, 3)."""
        k = self.slot_sdf(points).argmin(-1)  # (B, N)
        return torch.gather(self.albedo, 1, k[..., None].expand(*k.shape, 3))


def scene_sdf(scene: Scene, points: torch.Tensor) -> torch.Tensor:
    """Signed distance of one scene at points (N, 3) -> (N,) (negative inside)."""
    packed = PackedScenes.from_scenes([scene], points.device)
    return packed.sdf(points[None].float())[0]


def scene_albedo(scene: Scene, points: torch.Tensor) -> torch.Tensor:
    """Albedo (N, 3) in [0, 1] of the object nearest each point (N, 3)."""
    packed = PackedScenes.from_scenes([scene], points.device)
    return packed.albedo_at(points[None].float())[0]


def scenes_sdf(scenes: list[Scene], points: torch.Tensor) -> torch.Tensor:
    """Batched: points (B, N, 3) for B scenes -> (B, N)."""
    return PackedScenes.from_scenes(scenes, points.device).sdf(points.float())


# ------------------------------------------------------------------------------------------------------------------
# rendering
# ------------------------------------------------------------------------------------------------------------------

BOUND_RADIUS = 1.25  # every scene lies inside this sphere about the origin
LIGHT_DIR_CAMERA = (-0.35, 0.45, 1.0)  # light direction in the camera frame (x right, y up, +z towards the viewer)


@dataclass
class RenderConfig:
    supersample: int = 2  # render at size * supersample, then box-filter down (anti-aliasing)
    steps: int = 64  # sphere-tracing iterations
    ambient: float = 0.4  # k_a
    diffuse: float = 0.65  # k_d
    light_jitter: float = 0.0  # std of a Gaussian perturbation of the camera-frame light direction
    hit_eps: float = 2e-3


def _light_dirs(cameras: Cameras, cfg: RenderConfig, rng: torch.Generator | None, device) -> torch.Tensor:
    b = len(cameras)
    l_cam = torch.tensor(LIGHT_DIR_CAMERA, device=device).expand(b, 3).clone()
    l_cam = l_cam / l_cam.norm(dim=-1, keepdim=True)
    if cfg.light_jitter > 0:
        if rng is None:
            raise ValueError("light_jitter > 0 needs a torch.Generator for reproducibility")
        noise = torch.randn(b, 3, generator=rng).to(device)
        l_cam = l_cam + cfg.light_jitter * noise
        l_cam[:, 2] = l_cam[:, 2].abs()  # keep the light on the viewer's side
        l_cam = l_cam / l_cam.norm(dim=-1, keepdim=True)
    rot = cameras.c2w[:, :3, :3]
    return torch.einsum("brc,bc->br", rot, l_cam)


@torch.no_grad()
def render_scenes(
    scenes: list[Scene] | PackedScenes,
    cameras: Cameras,
    size: int = 32,
    config: RenderConfig | None = None,
    rng: torch.Generator | None = None,
    return_mask: bool = False,
):
    """Sphere-trace B scenes, one camera each, to (B, 3, size, size) RGB in [0, 1] on white.

    Rays march x <- x + phi(x) d from the entry of the bounding sphere for ``config.steps`` iterations; a pixel hits
    where phi < hit_eps. Normals n = grad phi / |grad phi| by central differences; colour = albedo * (k_a + k_d max(0,
    n . l)). Rendered at ``size * supersample`` and box-filtered. With ``return_mask`` also returns the coverage
    (B, 1, size, size) in [0, 1].
    """
    cfg = config or RenderConfig()
    device = cameras.elevation.device
    packed = scenes if isinstance(scenes, PackedScenes) else PackedScenes.from_scenes(scenes, device)
    b = len(cameras)
    if packed.shape_id.shape[0] != b:
        raise ValueError(f"{packed.shape_id.shape[0]} scenes but {b} cameras; pass one camera per scene")
    hi = size * cfg.supersample
    origins, dirs = cameras.rays(hi, hi)
    o = origins.reshape(-1, 3)
    d = dirs.reshape(-1, 3)
    scene_index = torch.arange(b, device=device).repeat_interleave(hi * hi)
    # entry/exit distances of the bounding sphere |o + s d| = R (s: ray_dist)
    bq = (o * d).sum(-1)
    cq = (o * o).sum(-1) - BOUND_RADIUS**2
    disc = bq * bq - cq
    sq = disc.clamp_min(0).sqrt()
    ray_dist = (-bq - sq).clamp_min(0)
    exit_dist = -bq + sq
    hit = torch.zeros_like(ray_dist, dtype=torch.bool)
    active = torch.nonzero(disc > 0).squeeze(1)  # rays still marching
    for _ in range(cfg.steps):
        if active.numel() == 0:
            break
        marched = ray_dist[active]
        dist = packed.flat_slot_sdf(o[active] + marched[:, None] * d[active], scene_index[active]).min(-1).values
        marched = marched + dist
        ray_dist[active] = marched
        done = dist < cfg.hit_eps
        hit[active[done]] = True
        gone = marched > exit_dist[active]
        active = active[~(done | gone)]
    hit &= ray_dist < exit_dist
    x = o + ray_dist[:, None] * d
    # normals n = grad phi / |grad phi| by central differences, albedo of the nearest object, on hit rays only
    hit_idx = torch.nonzero(hit).squeeze(1)
    xh, sh = x[hit_idx], scene_index[hit_idx]
    h = 1e-3
    grads = []
    for axis in range(3):
        e = torch.zeros(3, device=device)
        e[axis] = h
        grads.append(packed.flat_slot_sdf(xh + e, sh).min(-1).values - packed.flat_slot_sdf(xh - e, sh).min(-1).values)
    n = torch.stack(grads, -1)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    light = _light_dirs(cameras, cfg, rng, device)  # (B, 3)
    lam = (n * light[sh]).sum(-1).clamp_min(0)
    k = packed.flat_slot_sdf(xh, sh).argmin(-1)
    albedo = packed.albedo[sh, k]
    shade = (albedo * (cfg.ambient + cfg.diffuse * lam)[:, None]).clamp(0, 1)
    rgb = torch.ones(b * hi * hi, 3, device=device)
    rgb[hit_idx] = shade
    rgb = rgb.reshape(b, hi, hi, 3).permute(0, 3, 1, 2)
    mask = hit.float().reshape(b, 1, hi, hi)
    if cfg.supersample > 1:
        rgb = torch.nn.functional.avg_pool2d(rgb, cfg.supersample)
        mask = torch.nn.functional.avg_pool2d(mask, cfg.supersample)
    return (rgb, mask) if return_mask else rgb
