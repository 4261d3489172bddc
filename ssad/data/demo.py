"""A small procedural dataset in MVTec AD layout, made offline in seconds, for first runs and tests.

`make_demo_dataset(root)` writes six categories, each with `train/good`, `test/good`, defective
test folders and `ground_truth` masks, plus (all but `demo_strip`) a `category.json` that tells the
reader its kind:

| category       | kind          | scene                                                     | defects                     |
|----------------|---------------|-----------------------------------------------------------|-----------------------------|
| `demo_object`  | still object  | a shaded disc on a plain background, position jittered    | crack, stain, missing       |
| `demo_moving`  | moving object | a screw-like rod with a head, any rotation and position   | crack, stain, missing       |
| `demo_dark`    | still object  | a dark grooved rubber ring on a near-black backdrop       | gash, worn, missing         |
| `demo_texture` | texture       | wood-like grain warped by smooth noise                    | crack, stain, hole          |
| `demo_glossy`  | still object  | a dark glossy body on a near-black backdrop, highlights   | pinhole, cut, speck (small) |
|                |               | that move from image to image                             |                             |
| `demo_strip`   | inferred      | a grayscale brushed-metal strip filling the whole frame   | crack, scratch, spot        |

The defects are deliberately unlike what the synthesizer pastes (polygons and rectangles): cracks are
random walks, stains are noise-shaped blobs, holes have wobbly outlines, missing parts are bites out
of the object's outline, gashes are thin curved cuts, worn patches lose the tread's texture but keep
its colour. `demo_dark` is the hard case for foreground estimation: its rubber's mean colour is
barely off the backdrop's (only its texture and a narrow highlight stand out).

The last two reproduce what real parts that nobody tuned for showed. `demo_glossy` has one to three
bright, soft, elongated highlights that move from image to image, in training and test images
alike, while its defects are small (pinholes of radius 0.6-1.2% of the image side, cuts 2-5% long
and 1-2 px wide at 256 px, light specks of radius 0.8-1.5%), smaller than the highlights and placed
on the body off them: a detector that scores an image by its anomaly map's maximum sees the
highlights, the brightest normal variation, before the defects (its body's fine grain keeps the
foreground estimate on the whole body despite the highlights). `demo_strip` is a surface with no
backdrop, like KolektorSDD's commutators or magnetic tiles, with R = G = B. It has no
`category.json` on purpose: a user's folder of such images has none either, so the reader must
infer the kind itself (a surface that fills the frame reads as a texture); `demo_strip` tests that.

Everything comes from one `numpy.random.Generator` per category and PNGs are written with fixed
parameters, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ssad.data.categories import CATEGORY_FILE, CategoryInfo

__all__ = ["DEMO_CATEGORIES", "make_demo_dataset"]


@dataclass(frozen=True)
class _Scene:
    """A rendered image `(S, S, 3) float32` in [0, 1] (`(S, S, 1)` for a grayscale scene), its object
    `(S, S) bool`, what lies behind it, and the specular highlights `(S, S)` added on top, if any."""

    image: np.ndarray
    obj: np.ndarray
    background: np.ndarray
    shine: np.ndarray | None = None


Renderer = Callable[[np.random.Generator, int], _Scene]
Defect = Callable[[np.random.Generator, _Scene], tuple[np.ndarray, np.ndarray]]


def make_demo_dataset(
    root: str | os.PathLike[str],
    seed: int = 0,
    image_size: int = 256,
    n_train: int = 60,
    n_test: int = 8,
    categories: Sequence[str] | None = None,
) -> list[Path]:
    """Write the demo `categories` under `root` and return their folders.

    `categories` defaults to all of `DEMO_CATEGORIES`. `n_train` training images per category;
    `n_test` test images in `test/good` and in each defect folder. A category folder that exists
    is replaced; each is written to a temporary folder first, so an interrupted call leaves no
    half-written category.
    """
    categories = list(DEMO_CATEGORIES) if categories is None else categories
    unknown = sorted(set(categories) - set(DEMO_CATEGORIES))
    if unknown:
        raise ValueError(f"unknown demo categories {unknown}; choose from {sorted(DEMO_CATEGORIES)}")
    if image_size < 32 or n_train < 1 or n_test < 1:
        raise ValueError(f"need image_size >= 32, n_train >= 1, n_test >= 1; got {image_size}, {n_train}, {n_test}")
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return [_write_category(root, name, seed, image_size, n_train, n_test) for name in categories]


def _write_category(root: Path, name: str, seed: int, size: int, n_train: int, n_test: int) -> Path:
    info, render, defects = DEMO_CATEGORIES[name]
    rng = np.random.default_rng([seed, list(DEMO_CATEGORIES).index(name)])
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".writing", dir=root))
    try:
        if info is not None:  # None: no category.json, the reader infers the kind
            meta = {"kind": info.kind, "moves": info.moves} if info.kind == "object" else {"kind": info.kind}
            (staging / CATEGORY_FILE).write_text(json.dumps(meta) + "\n", encoding="utf-8")
        for i in range(n_train):
            _save(staging / "train" / "good" / f"{i:03d}.png", _finish(rng, render(rng, size).image))
        for i in range(n_test):
            _save(staging / "test" / "good" / f"{i:03d}.png", _finish(rng, render(rng, size).image))
        for defect_name, defect in defects.items():
            for i in range(n_test):
                image, mask = defect(rng, render(rng, size))
                _save(staging / "test" / defect_name / f"{i:03d}.png", _finish(rng, image))
                _save(staging / "ground_truth" / defect_name / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)
        staging.chmod(0o755)
        target = root / name
        if target.exists():
            shutil.rmtree(target)
        os.rename(staging, target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _save(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as PNG with fixed settings (no metadata, fixed compression)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def _finish(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Add faint sensor noise and quantise: `(S, S, 3) float` in [0, 1] -> `(S, S, 3) uint8`.

    A grayscale image `(S, S, 1)` gets one noise for its one channel and comes out `(S, S, 3)` with
    R = G = B.
    """
    noisy = image + rng.normal(0.0, 0.01, image.shape)
    quantised = np.clip(np.rint(noisy * 255), 0, 255).astype(np.uint8)
    return np.repeat(quantised, 3, axis=2) if quantised.shape[2] == 1 else quantised


# --- smooth randomness ---------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """`(S, S)` value noise in [0, 1]: a `cells x cells` random grid smoothly interpolated."""
    weights = _interpolation(size, cells)
    return weights @ rng.random((cells, cells)) @ weights.T


def _interpolation(size: int, cells: int) -> np.ndarray:
    """`(S, cells)` weights that interpolate `cells` values smoothly (smoothstep) over `S` pixels."""
    u = np.linspace(0, cells - 1, size)
    i = np.minimum(u.astype(int), cells - 2)
    t = u - i
    t = t * t * (3 - 2 * t)
    weights = np.zeros((size, cells))
    weights[np.arange(size), i] = 1 - t
    weights[np.arange(size), i + 1] = t
    return weights


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates `(y, x)`, each `(S, S)` in [0, 1]."""
    ramp = (np.arange(size) + 0.5) / size
    return np.meshgrid(ramp, ramp, indexing="ij")


def _coverage(distance: np.ndarray, size: int) -> np.ndarray:
    """Antialiased coverage in [0, 1] of a shape from its signed distance (image units, < 0 inside)."""
    return np.clip(0.5 - distance * size, 0.0, 1.0)


def _erode(region: np.ndarray, pixels: int) -> np.ndarray:
    """`region` `(S, S) bool` less every pixel within `pixels` steps (city-block) of its outside or
    of the image border."""
    for _ in range(pixels):
        padded = np.pad(region, 1)
        region = region & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return region


def _pick(rng: np.random.Generator, region: np.ndarray) -> tuple[float, float]:
    """A uniformly random pixel of `region` `(S, S) bool`, as `(y, x)` in image units."""
    flat = np.flatnonzero(region)
    index = flat[rng.integers(len(flat))]
    size = region.shape[0]
    return (index // size + 0.5) / size, (index % size + 0.5) / size


# --- scenes -----------------------------------------------------------------------------------------


def _plain_background(rng: np.random.Generator, size: int) -> np.ndarray:
    level = 0.82 + 0.04 * rng.random() + 0.03 * _smooth_noise(rng, size, 3)
    return np.repeat(level[..., None], 3, axis=2)


def _composite(rng: np.random.Generator, size: int, distance: np.ndarray, surface: np.ndarray) -> _Scene:
    background = _plain_background(rng, size)
    alpha = _coverage(distance, size)[..., None]
    image = background * (1 - alpha) + surface * alpha
    return _Scene(image.astype(np.float32), alpha[..., 0] > 0.5, background)


def _disc(rng: np.random.Generator, size: int) -> _Scene:
    """A bronze disc with an inner ring, its centre jittered by up to 4% of the image."""
    y, x = _grid(size)
    cy, cx = 0.5 + 0.04 * (rng.random(2) * 2 - 1)
    r = np.hypot(y - cy, x - cx)
    shade = 0.85 + 0.15 * (1 - r / 0.3) + 0.06 * _smooth_noise(rng, size, 6)
    ring = np.exp(-(((r - 0.17) * size / 3.0) ** 2)) * 0.35
    surface = np.array([0.78, 0.56, 0.30]) * (shade - ring)[..., None]
    return _composite(rng, size, r - 0.3, np.clip(surface, 0, 1))


def _rod(rng: np.random.Generator, size: int) -> _Scene:
    """A threaded rod with a round head, at a random angle and position."""
    y, x = _grid(size)
    cy, cx = 0.5 + 0.08 * (rng.random(2) * 2 - 1)
    angle = 2 * math.pi * rng.random()
    u = (x - cx) * math.cos(angle) + (y - cy) * math.sin(angle)
    v = -(x - cx) * math.sin(angle) + (y - cy) * math.cos(angle)
    half_length, radius = 0.26, 0.06
    shaft = np.hypot(np.maximum(np.abs(u) - half_length, 0), v) - radius
    head = np.hypot(u + half_length, v) - 1.7 * radius
    thread = np.where(u > -half_length + 2 * radius, 0.12 * np.sin(2 * math.pi * u * 28), 0.0)
    shade = 0.75 + 0.2 * np.cos(np.clip(v / (1.7 * radius), -1, 1) * math.pi / 2) - thread
    surface = np.array([0.55, 0.58, 0.62]) * shade[..., None]
    return _composite(rng, size, np.minimum(shaft, head), np.clip(surface, 0, 1))


def _dark_background(rng: np.random.Generator, size: int) -> np.ndarray:
    level = 0.05 + 0.02 * rng.random() + 0.015 * _smooth_noise(rng, size, 4)
    return np.repeat(level[..., None], 3, axis=2)


def _tyre(rng: np.random.Generator, size: int) -> _Scene:
    """A dark rubber ring with a grooved tread and grainy surface on a near-black backdrop, lit by
    one narrow highlight: its mean colour is barely off the backdrop's, its texture is not."""
    y, x = _grid(size)
    cy, cx = 0.5 + 0.03 * (rng.random(2) * 2 - 1)
    r, theta = np.hypot(y - cy, x - cx), np.arctan2(y - cy, x - cx)
    outer, inner = 0.36, 0.17
    groove = np.sin(theta * 36 + 2 * math.pi * rng.random()) > 0.35  # radial tread grooves
    ridge = np.abs(r - 0.5 * (outer + inner)) < 0.012  # a rib running round the middle
    grain = rng.normal(0.0, 0.035, (size, size))  # the rubber's grain, absent on the backdrop
    shade = 0.115 + grain - 0.045 * groove + 0.05 * ridge
    highlight = np.exp(-(((theta + 2.2) / 0.35) ** 2)) * np.exp(-(((r - 0.31) * size / 4.0) ** 2)) * 0.6
    surface = np.array([0.95, 1.0, 1.05]) * np.clip(shade + highlight, 0, 1)[..., None]
    background = _dark_background(rng, size)
    distance = np.maximum(r - outer, inner - r)  # the ring: outside the hole, inside the rim
    alpha = _coverage(distance, size)[..., None]
    image = background * (1 - alpha) + surface * alpha
    return _Scene(image.astype(np.float32), alpha[..., 0] > 0.5, background)


def _grain(rng: np.random.Generator, size: int) -> _Scene:
    """Wood-like grain: stripes warped by smooth noise, between two browns."""
    y, x = _grid(size)
    warp = _smooth_noise(rng, size, 5)
    t = 0.5 + 0.5 * np.sin(2 * math.pi * (14 * y + 2.5 * warp + 0.3 * x) + 2 * math.pi * rng.random())
    t = t**2 * 0.8 + 0.2 * _smooth_noise(rng, size, 24)
    image = np.array([0.72, 0.52, 0.32]) * (1 - t[..., None]) + np.array([0.50, 0.32, 0.17]) * t[..., None]
    image = image.astype(np.float32)
    return _Scene(image, np.ones((size, size), dtype=bool), image)


def _glossy(rng: np.random.Generator, size: int) -> _Scene:
    """A dark glossy body (a rounded rectangle of black plastic or rubber, 70% x 54% of the image,
    with a bevelled rim and a fine grain) on a near-black backdrop, its centre jittered by up to 3% of
    the image, lit by one to three specular highlights that move from image to image (`_highlights`).
    Without the grain, the foreground estimate would take the highlights alone for the object on
    about half the images: its colour cue's threshold falls between the body and the highlights."""
    y, x = _grid(size)
    cy, cx = 0.5 + 0.03 * (rng.random(2) * 2 - 1)
    half_height, half_width, corner = 0.27, 0.35, 0.09
    qy, qx = np.abs(y - cy) - (half_height - corner), np.abs(x - cx) - (half_width - corner)
    distance = np.hypot(np.maximum(qy, 0), np.maximum(qx, 0)) + np.minimum(np.maximum(qy, qx), 0) - corner
    bevel = np.clip(1 + distance / 0.045, 0, 1)  # 1 on the rim, 0 from 4.5% inside
    rim = np.exp(-(((distance + 1.5 / size) * size / 1.2) ** 2))  # a thin edge catching the light
    shade = 0.13 - 0.035 * bevel**2 + 0.05 * rim + 0.02 * _smooth_noise(rng, size, 5)
    shade = shade + rng.normal(0.0, 0.015, (size, size))  # a fine grain: the texture sets it off the backdrop
    shine = _highlights(rng, size, distance < -0.08)
    alpha = _coverage(distance, size)
    surface = np.clip(np.array([0.96, 1.0, 1.05]) * shade[..., None] + shine[..., None], 0, 1)
    background = _dark_background(rng, size)
    image = background * (1 - alpha[..., None]) + surface * alpha[..., None]
    return _Scene(image.astype(np.float32), alpha > 0.5, background, (shine * alpha).astype(np.float32))


def _highlights(rng: np.random.Generator, size: int, region: np.ndarray) -> np.ndarray:
    """One to three specular highlights `(S, S)` (added to the image), centred on random pixels of
    `region`: soft, elongated, slightly bent streaks at a random angle, flat-topped along (a length
    sd of 5-10% of the image side) and Gaussian across (a width sd of 1.2-2.7%), peaking at +0.5-0.9,
    each in a faint sheen twice its length and three times its width."""
    y, x = _grid(size)
    shine = np.zeros((size, size))
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = _pick(rng, region)
        angle = math.pi * rng.random()
        length, width = 0.05 + 0.05 * rng.random(), 0.012 + 0.015 * rng.random()
        u = (x - cx) * math.cos(angle) + (y - cy) * math.sin(angle)
        v = -(x - cx) * math.sin(angle) + (y - cy) * math.cos(angle) - rng.normal(0.0, 1.0) * u * u
        along, across = np.square(u / length), np.square(v / width)
        core = np.exp(-0.5 * (along * along + across))
        sheen = np.exp(-0.5 * (along / 4 + across / 9))
        shine += (0.5 + 0.4 * rng.random()) * (core + 0.12 * sheen)
    return shine


def _strip(rng: np.random.Generator, size: int) -> _Scene:
    """A grayscale strip of brushed metal that fills the frame, no backdrop: fine horizontal streaks
    (each row its own brightness, drifting slowly along the row), broader bands, a faint periodic
    tool mark whose phase changes per image, slow shading and a per-image brightness. Its image is
    `(S, S, 1)`: `_finish` makes it three equal channels."""
    y, x = _grid(size)
    along = _interpolation(size, 6)
    fine = rng.normal(0.0, 1.0, (size, 6)) @ along.T  # row streaks, drifting along the row
    bands = _interpolation(size, max(4, size // 6)) @ rng.random(max(4, size // 6))
    marks = np.sin(2 * math.pi * (23 * y + 0.3 * x) + 2 * math.pi * rng.random())
    level = 0.45 + 0.12 * rng.random()
    shade = 0.06 * np.cos(math.pi * (y - 0.5)) + 0.08 * _smooth_noise(rng, size, 3) - 0.04
    image = level + shade + 0.03 * fine + 0.05 * (bands[:, None] - 0.5) + 0.012 * marks
    image = np.clip(image, 0, 1)[..., None].astype(np.float32)
    return _Scene(image, np.ones((size, size), dtype=bool), image)


# --- defects: each returns (image, mask), mask (S, S) bool non-empty and inside the object ------------


def _walk(rng: np.random.Generator, region: np.ndarray, steps: tuple[int, int], step: float, width: int) -> np.ndarray:
    """The pixels `(S, S) bool` of a random walk on `region` drawn `width` px wide: from a random pixel,
    `steps[0]` to `steps[1] - 1` steps of `step` px times 0.5-1.5, turning by N(0, 0.5) rad each."""
    size = region.shape[0]
    y, x = _pick(rng, region)
    heading = 2 * math.pi * rng.random()
    points = [(x * size, y * size)]
    for _ in range(int(rng.integers(*steps))):
        heading += rng.normal(0.0, 0.5)
        length = step * (0.5 + rng.random())
        px, py = points[-1][0] + length * math.cos(heading), points[-1][1] + length * math.sin(heading)
        if not (0 <= px < size and 0 <= py < size and region[int(py), int(px)]):
            heading += math.pi  # the walk would leave the region: turn back
            continue
        points.append((px, py))
    canvas = Image.new("L", (size, size))
    ImageDraw.Draw(canvas).line(points, fill=255, width=width, joint="curve")
    canvas.putpixel((int(points[0][0]), int(points[0][1])), 255)  # non-empty even if every step turned back
    return (np.asarray(canvas) > 0) & region


def _crack(rng: np.random.Generator, scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """A dark random-walk crack starting on the object: 12-23 steps of about 1/48 of the image side,
    max(2, S // 96) px wide (2 px at 256); the image is darkened to 35% on it."""
    size = scene.obj.shape[0]
    mask = _walk(rng, scene.obj, (12, 24), size / 48, max(2, size // 96))
    image = np.where(mask[..., None], scene.image * 0.35, scene.image)
    return image, mask


def _stain(rng: np.random.Generator, scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """A noise-shaped stain of a random colour, centred on the object."""
    size = scene.obj.shape[0]
    cy, cx = _pick(rng, scene.obj)
    y, x = _grid(size)
    radius = 0.05 + 0.05 * rng.random()
    envelope = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * radius**2))
    field = envelope * (0.5 + 0.5 * _smooth_noise(rng, size, 12))
    mask = (field > 0.35) & scene.obj
    colour = rng.random(3) * 0.6
    strength = np.clip((field - 0.35) * 6, 0.3, 0.8)[..., None]
    image = np.where(mask[..., None], scene.image * (1 - strength) + colour * strength, scene.image)
    return image, mask


def _hole(rng: np.random.Generator, scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """A dark hole with a wobbly outline and a light rim."""
    size = scene.obj.shape[0]
    cy, cx = _pick(rng, scene.obj)
    y, x = _grid(size)
    theta = np.arctan2(y - cy, x - cx)
    wobble = sum(0.15 * rng.random() * np.sin(k * theta + 2 * math.pi * rng.random()) for k in (2, 3, 5))
    distance = np.hypot(y - cy, x - cx) - (0.03 + 0.04 * rng.random()) * (1 + wobble)
    inside = _coverage(distance, size)[..., None]
    rim = np.exp(-((distance * size / 2.0) ** 2))[..., None] * 0.25
    image = np.clip(scene.image * (1 - inside) + 0.06 * inside + rim, 0, 1)
    return image, (_coverage(distance - 1.5 / size, size) > 0) & scene.obj


def _missing(rng: np.random.Generator, scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """A bite out of the object's outline, showing the background."""
    size = scene.obj.shape[0]
    edge = scene.obj & ~np.roll(scene.obj, int(rng.choice([-3, 3])), axis=int(rng.integers(2)))
    cy, cx = _pick(rng, edge if edge.any() else scene.obj)
    y, x = _grid(size)
    theta = np.arctan2(y - cy, x - cx)
    radius = (0.05 + 0.04 * rng.random()) * (1 + 0.2 * np.sin(3 * theta + 2 * math.pi * rng.random()))
    mask = (np.hypot(y - cy, x - cx) < radius) & scene.obj
    return np.where(mask[..., None], scene.background, scene.image), mask


def _gash(rng: np.random.Generator, scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """A thin, slightly curved cut whose lips catch the light: lighter than the rubber."""
    size = scene.obj.shape[0]
    cy, cx = _pick(rng, scene.obj)
    y, x = _grid(size)
    heading = 2 * math.pi * rng.random()
    u = (x - cx) * math.cos(heading) + (y - cy) * math.sin(heading)
    v = -(x - cx) * math.sin(heading) + (y - cy) * math.cos(heading) - 2.0 * rng.normal(0, 0.5) * u**2
    half_length, half_width = 0.04 + 0.04 * rng.random(), 0.5 * max(2.0, size / 100) / size
    mask = (np.abs(u) < half_length) & (np.abs(v) < half_width * (1 - (u / half_length) ** 2) + 0.5 / size)
    mask &= scene.obj
    if not mask.any():  # a cut that fell off the object: keep its centre pixel
        mask[int(cy * size), int(cx * size)] = True
    image = np.where(mask[..., None], 0.32 + 0.1 * rng.random(), scene.image)
    return image, mask


def _worn(rng: np.random.Generator, scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """A patch worn smooth: the tread and grain are gone, the mean colour stays."""
    size = scene.obj.shape[0]
    cy, cx = _pick(rng, scene.obj)
    y, x = _grid(size)
    theta = np.arctan2(y - cy, x - cx)
    radius = (0.035 + 0.03 * rng.random()) * (1 + 0.25 * np.sin(2 * theta + 2 * math.pi * rng.random()))
    mask = (np.hypot(y - cy, x - cx) < radius) & scene.obj
    smooth = np.array([0.95, 1.0, 1.05]) * (0.105 + 0.01 * _smooth_noise(rng, size, 8))[..., None]
    return np.where(mask[..., None], smooth, scene.image), mask


def _small_spot(rng: np.random.Generator, scene: _Scene) -> tuple[float, float]:
    """Where a small defect goes, as `(y, x)`: on the object at least 3% of the side from its outline,
    and off the highlights where the scene has some (a defect may still touch one)."""
    inner = _erode(scene.obj, math.ceil(0.03 * scene.obj.shape[0]))
    inner = inner if inner.any() else scene.obj
    dull = inner & (scene.shine < 0.05) if scene.shine is not None else inner
    return _pick(rng, dull if dull.any() else inner)


def _with_centre(mask: np.ndarray, y: float, x: float) -> np.ndarray:
    """`mask` with the pixel at `(y, x)` (image units) set: a defect too small for any pixel centre
    still marks one."""
    size = mask.shape[0]
    mask[min(int(y * size), size - 1), min(int(x * size), size - 1)] = True
    return mask


def _pinhole(rng: np.random.Generator, scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """A pinhole: a tiny round hole of radius 0.6-1.2% of the image side (1.5-3 px at 256), dark (two
    times in three) or light, with a faint light rim. Mask: the hole and 1.5 px around it."""
    size = scene.obj.shape[0]
    cy, cx = _small_spot(rng, scene)
    y, x = _grid(size)
    distance = np.hypot(y - cy, x - cx) - (0.006 + 0.006 * rng.random())
    inside = _coverage(distance, size)[..., None]
    level = 0.02 + 0.03 * rng.random() if rng.random() < 2 / 3 else 0.32 + 0.1 * rng.random()
    rim = 0.05 * np.exp(-(((distance * size - 0.7) / 0.7) ** 2))[..., None] * (1 - inside)
    image = np.clip(scene.image * (1 - inside) + level * inside + rim, 0, 1)
    return image, _with_centre((distance * size < 1.5) & scene.obj, cy, cx)


def _cut(rng: np.random.Generator, scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """A short thin cut: a straight or slightly bent line 2-5% of the image side long (5-13 px at
    256), 1-2 px wide at 256 (at least 1 px at any size), tapered at its ends, lighter or darker than
    the surface by 0.05-0.1. Mask: the line, its antialiased edge included."""
    size = scene.obj.shape[0]
    cy, cx = _small_spot(rng, scene)
    heading, half_length = math.pi * rng.random(), 0.5 * (0.02 + 0.03 * rng.random())
    half_width = 0.5 * max(1.0, size / 256 * (1 + rng.random())) / size
    cover = _thin_line(size, (cy, cx), heading, half_length, half_width, rng.normal(0.0, 4.0),
                       lambda r: np.sqrt(np.clip(1 - r**2, 0, 1)))
    shift = (0.05 + 0.05 * rng.random()) * (1 if rng.random() < 0.5 else -1)
    image = np.clip(scene.image + shift * cover[..., None], 0, 1)
    return image, _with_centre((cover > 0) & scene.obj, cy, cx)


def _speck(rng: np.random.Generator, scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """A speck of light contamination (dust, a dried drop): a soft, slightly oval spot whose half-peak
    radius is 0.8-1.5% of the image side (2-4 px at 256), lighter than the surface by 0.12-0.25 at
    its centre. Mask: the spot out to a quarter of its peak."""
    size = scene.obj.shape[0]
    cy, cx = _small_spot(rng, scene)
    y, x = _grid(size)
    theta = np.arctan2(y - cy, x - cx)
    radius = (0.008 + 0.007 * rng.random()) * (1 + 0.15 * np.cos(2 * theta + 2 * math.pi * rng.random()))
    profile = np.exp(-math.log(2) * (np.hypot(y - cy, x - cx) / radius) ** 2)
    image = np.clip(scene.image + (0.12 + 0.13 * rng.random()) * profile[..., None], 0, 1)
    return image, _with_centre((profile > 0.25) & scene.obj, cy, cx)


def _hairline(rng: np.random.Generator, scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """A short thin dark crack: a random walk of 6-11 steps of about 1/64 of the image side (a path of
    some 10-17% of the side), max(1, S // 128) px wide (2 px at 256); the surface is darkened to
    40-55% on it."""
    size = scene.obj.shape[0]
    mask = _walk(rng, scene.obj, (6, 12), size / 64, max(1, size // 128))
    image = np.where(mask[..., None], scene.image * (0.4 + 0.15 * rng.random()), scene.image)
    return image, mask


def _scratch(rng: np.random.Generator, scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """A thin straight-ish light scratch at a random angle: 10-30% of the image side long, 1-2 px
    wide at 256 (at least 1 px), slightly bent, tapered at its ends, lighter by 0.15-0.3. Mask: the
    line, its antialiased edge included."""
    size = scene.obj.shape[0]
    cy, cx = _pick(rng, _erode(scene.obj, math.ceil(0.1 * size)))
    heading, half_length = math.pi * rng.random(), 0.5 * (0.1 + 0.2 * rng.random())
    half_width = 0.5 * max(1.0, size / 256 * (1 + rng.random())) / size
    # Full width but for the last quarter of each half.
    cover = _thin_line(size, (cy, cx), heading, half_length, half_width, rng.normal(0.0, 0.5),
                       lambda r: np.clip(4 * (1 - r), 0, 1))
    image = np.clip(scene.image + (0.15 + 0.15 * rng.random()) * cover[..., None], 0, 1)
    return image, _with_centre((cover > 0) & scene.obj, cy, cx)


def _thin_line(size: int, centre: tuple[float, float], heading: float, half_length: float, half_width: float,
               bend: float, taper: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """`(S, S)` antialiased coverage in [0, 1] of a thin line through ``centre`` (y, x in image units)
    at ``heading`` radians, ``half_length`` to each side, bent by ``bend * u**2`` across it; its
    half width is ``half_width * taper(r)`` at ``r = |u| / half_length`` along it (1 at the middle)."""
    cy, cx = centre
    y, x = _grid(size)
    u = (x - cx) * math.cos(heading) + (y - cy) * math.sin(heading)
    v = -(x - cx) * math.sin(heading) + (y - cy) * math.cos(heading) - bend * u**2
    along = np.abs(u) / half_length
    distance = np.where(along < 1, np.abs(v) - half_width * taper(np.minimum(along, 1)), 1.0)
    return _coverage(distance, size)


def _spot(rng: np.random.Generator, scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """A small blob, dark (corrosion, a pit) or light (a polished dent): a noise-shaped Gaussian of sd
    1.5-3.5% of the image side (4-9 px at 256), its contrast 0.15-0.3 in the middle fading to none
    at a fifth of its peak (some 2 sd out). Mask: every pixel it changes."""
    size = scene.obj.shape[0]
    cy, cx = _pick(rng, scene.obj)
    y, x = _grid(size)
    radius = 0.015 + 0.02 * rng.random()
    envelope = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * radius**2))
    field = envelope * (0.7 + 0.3 * _smooth_noise(rng, size, max(4, size // 8)))
    shift = (0.15 + 0.15 * rng.random()) * (1 if rng.random() < 0.5 else -1)
    image = np.clip(scene.image + shift * np.clip((field - 0.2) / 0.4, 0, 1)[..., None], 0, 1)
    return image, _with_centre((field > 0.2) & scene.obj, cy, cx)


DEMO_CATEGORIES: dict[str, tuple[CategoryInfo | None, Renderer, dict[str, Defect]]] = {
    "demo_moving": (CategoryInfo("demo_moving", "object", moves=True), _rod,
                    {"crack": _crack, "stain": _stain, "missing": _missing}),
    "demo_object": (CategoryInfo("demo_object", "object"), _disc,
                    {"crack": _crack, "stain": _stain, "missing": _missing}),
    "demo_texture": (CategoryInfo("demo_texture", "texture"), _grain,
                     {"crack": _crack, "stain": _stain, "hole": _hole}),
    "demo_dark": (CategoryInfo("demo_dark", "object"), _tyre,
                  {"gash": _gash, "worn": _worn, "missing": _missing}),
    "demo_glossy": (CategoryInfo("demo_glossy", "object"), _glossy,
                    {"pinhole": _pinhole, "cut": _cut, "speck": _speck}),
    "demo_strip": (None, _strip, {"crack": _hairline, "scratch": _scratch, "spot": _spot}),
}
"""Demo category name -> (kind, scene renderer, {defect type: defect painter}). A kind of None writes
no `category.json`, so the reader infers the kind as it would for a user's folder. A category's place
in this dict numbers its random stream: add new categories at the end, so the others stay the same."""
