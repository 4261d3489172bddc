"""The fused synthesis kernel: colour jitter, defect rasterization, fill and composite in one pass.

`fused_apply` computes what `ssad.synth.functional.apply` computes, with two Triton launches:

1. ``_average_kernel``, one program per sample: for samples whose fill mode is "average_colour",
   the mean of the colour-jittered source pixels over the defect, walking only the rows of the
   sample's compositing box that the defect spans (other samples return at once). It overwrites
   their row of the per-sample fill colour, which holds the flat colour otherwise.
2. ``_composite_kernel``, one program per (sample, tile of BLOCK_H x BLOCK_W pixels): reads each
   pixel of every channel once, jitters it, tests it against the sample's polygon, fetches the fill
   (the jittered source pixel for cut-paste, gathered only inside the defect; else the fill
   colour) and writes each output pixel and mask pixel once. No atomics.

The arithmetic follows the reference step by step so that masks are identical: the inside test
is the per-row interval test of `raster.rasterize` (same operations in the same order, IEEE
division, no fused multiply-add), the source pixel is `raster.source_pixels`' nearest pixel, and
the colour map comes from `functional.working_colour`. uint8 images work in [0.5, 255.5] with the
rounding offset folded into the bias and the final cast truncating; float images clamp to [0, 1].
Only the colour map's sum of products (and the average's sum) may round differently from the
reference, which moves a uint8 value by at most one level.

Indices within an image are int32; the per-sample offset is int64, so batches larger than 2**31
elements are fine.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from ssad.synth.functional import working_colour
from ssad.synth.config import FILL_MODES, SynthConfig
from ssad.synth.module import check_image_batch, check_source_images
from ssad.synth.raster import box_origins, compositing_box

__all__ = ["fused_apply", "plan", "Launch", "TILE_PIXELS", "NUM_WARPS", "AVERAGE_NUM_WARPS"]

#: Pixels per program of both kernels, and the composite kernel's warps: the fastest launch shape
#: of bench/gpu_check.py's ``tiles`` part.
TILE_PIXELS = 2048
NUM_WARPS = 8
#: Warps of the average kernel, Triton's default: it runs one program per sample, only for the
#: samples that average, and is not where the time goes.
AVERAGE_NUM_WARPS = 4

CUT_PASTE = tl.constexpr(FILL_MODES.index("cut_paste"))
AVERAGE = tl.constexpr(FILL_MODES.index("average_colour"))


class Launch(NamedTuple):
    """One kernel launch: ``kernel[grid](*args, **options)``; ``options`` holds the constexprs
    and compile options (num_warps, enable_fp_fusion)."""

    kernel: triton.runtime.JITFunction
    grid: tuple[int, ...]
    args: tuple
    options: dict


def fused_apply(
    images: Tensor,
    params: dict[str, Tensor],
    config: SynthConfig,
    source_images: Tensor | None = None,
    *,
    tile_pixels: int = TILE_PIXELS,
    num_warps: int = NUM_WARPS,
) -> tuple[Tensor, Tensor]:
    """`ssad.synth.functional.apply` in one fused pass (see the module docstring); arguments as
    `plan`. Returns images (B, C, H, W) of the input dtype and masks (B, 1, H, W) bool."""
    out, masks, launches = plan(images, params, config, source_images, tile_pixels=tile_pixels,
                                num_warps=num_warps)
    for launch in launches:
        launch.kernel[launch.grid](*launch.args, **launch.options)
    return out, masks.view(torch.bool)


def plan(
    images: Tensor,
    params: dict[str, Tensor],
    config: SynthConfig,
    source_images: Tensor | None = None,
    *,
    tile_pixels: int = TILE_PIXELS,
    num_warps: int = NUM_WARPS,
) -> tuple[Tensor, Tensor, list[Launch]]:
    """Everything `fused_apply` does short of launching: the per-sample tensors the kernels read,
    the output buffers (uninitialised) and the launches, in order, that fill them.

    Args:
        images: (B, C, H, W) uint8 or float in [0, 1], C in {1, 3}, on a CUDA device (or on the
            CPU under TRITON_INTERPRET=1).
        params: from `sample_params` for this shape, on the images' device.
        config: the config the params were drawn with (fixes the compositing box size).
        source_images: like ``images``; where cut-paste takes its patch (the images when None).
        tile_pixels: pixels per program of both kernels (a power of two); num_warps: warps of the
            composite kernel (a power of two; the average kernel takes `AVERAGE_NUM_WARPS`).

    Returns ``out`` (B, C, H, W) like ``images``, ``masks`` (B, 1, H, W) uint8 and the launches.
    Compiling the launches for a GPU that is not there (``bench/kernel_codegen.py``) starts here.
    """
    _check(images, params, source_images)
    batch, channels, height, width = images.shape
    box_h, box_w = compositing_box(config, height, width)
    images = images.contiguous()
    sources = images if source_images is None else source_images.contiguous()

    # The reference's arithmetic conventions: work dtype, uint8 rounding offset, clamp range.
    colour = working_colour(params, images.dtype, channels)
    matrix, bias = colour.matrix.contiguous(), colour.bias.contiguous()  # (B, C, C), (B, C)
    # Per-sample fill colour (B, C): the flat colour; the average kernel overwrites its samples' rows.
    fill = colour.flat.contiguous()

    # Tiny per-sample geometry, computed by the same torch code as the reference.
    vertices = params["vertices"].contiguous()  # (B, V, 2) float32
    origins = box_origins(vertices, box_h, box_w, height, width).contiguous()  # (B, 2) int64
    theta = torch.deg2rad(params["angle"])
    cos, sin = theta.cos().contiguous(), theta.sin().contiguous()  # (B,)

    out = torch.empty_like(images)
    masks = torch.empty(batch, 1, height, width, dtype=torch.uint8, device=images.device)

    per_sample = (
        matrix, bias, fill, vertices, params["num_vertices"].contiguous(), params["fill_mode"].contiguous(),
        origins, params["centre"].contiguous(), params["source"].contiguous(), cos, sin,
    )
    constants = dict(LO=colour.low, HI=colour.high, C=channels, V=vertices.shape[1], enable_fp_fusion=False)

    box_block_w = triton.next_power_of_2(box_w)
    average = Launch(
        _average_kernel, (batch,), (sources, *per_sample, height, width, box_h, box_w),
        dict(BLOCK_H=max(1, tile_pixels // box_block_w), BLOCK_W=box_block_w, num_warps=AVERAGE_NUM_WARPS,
             **constants),
    )
    block_w = min(triton.next_power_of_2(width), tile_pixels)
    block_h = min(max(1, tile_pixels // block_w), triton.next_power_of_2(height))
    tiles_w, tiles_h = triton.cdiv(width, block_w), triton.cdiv(height, block_h)
    composite = Launch(
        _composite_kernel, (batch * tiles_h * tiles_w,),
        (images, sources, out, masks, *per_sample, height, width, box_h, box_w, tiles_w, tiles_h * tiles_w),
        dict(BLOCK_H=block_h, BLOCK_W=block_w, num_warps=num_warps, **constants),
    )
    return out, masks, [average, composite]


def _check(images: Tensor, params: dict[str, Tensor], source_images: Tensor | None) -> None:
    """Raise ValueError for inputs the kernel does not take (all checks read shapes only): those
    of the synthesizer (`check_image_batch`, `check_source_images`), and params of float32 on the
    images' device."""
    check_image_batch(images)
    check_source_images(source_images, images)
    vertices = params["vertices"]
    if vertices.device != images.device or vertices.dtype != torch.float32:
        raise ValueError(f"params must be float32 on {images.device} (from sample_params); "
                         f"vertices are {vertices.dtype} on {vertices.device}.")


# --- device helpers, shared by both kernels ------------------------------------------------------


@triton.jit
def _load_channels(ptr, offsets, plane, mask, dtype: tl.constexpr, C: tl.constexpr):
    """Channels of the pixels at ``offsets`` of the image at ``ptr`` (channel stride ``plane``),
    converted to ``dtype``. Returns three tensors; with C == 1 all three are channel 0."""
    x0 = tl.load(ptr + offsets, mask=mask, other=0).to(dtype)
    if C == 3:
        x1 = tl.load(ptr + plane + offsets, mask=mask, other=0).to(dtype)
        x2 = tl.load(ptr + 2 * plane + offsets, mask=mask, other=0).to(dtype)
    else:
        x1 = x0
        x2 = x0
    return x0, x1, x2


@triton.jit
def _jitter_channel(x0, x1, x2, matrix_ptr, bias_ptr, sample, c: tl.constexpr,
                    LO: tl.constexpr, HI: tl.constexpr, C: tl.constexpr):
    """Channel c of the sample's colour map, clamped: ``clamp(b[c] + M[c] . x, LO, HI)``, for
    pixels of channels x0, x1, x2. Summed in the order of torch's CPU ``baddbmm`` (bias first);
    cuBLAS may round the sum differently."""
    row = matrix_ptr + (sample * C + c) * C
    y = tl.load(bias_ptr + sample * C + c) + tl.load(row) * x0
    if C == 3:
        y += tl.load(row + 1) * x1
        y += tl.load(row + 2) * x2
    return tl.minimum(tl.maximum(y, LO), HI)


@triton.jit
def _inside(rows, cols, vertices_ptr, num_vertices, box_x, box_y, box_h, box_w, V: tl.constexpr):
    """(BLOCK_H, BLOCK_W) bool: pixels ``rows`` (BLOCK_H, 1) x ``cols`` (1, BLOCK_W) int32 that
    lie in the sample's compositing box and whose centre lies in its convex polygon, by the per-row
    interval test of `raster.rasterize` (same formula, same rounding): edge k keeps the points with
    ``-ey * px + g >= 0``, ``g = ex * (py - vy) + ey * vx``; ``vertices_ptr`` holds V (x, y) float32."""
    py = rows.to(tl.float32) + 0.5
    px = cols.to(tl.float32) + 0.5
    lower = tl.full(py.shape, float("-inf"), tl.float32)
    upper = tl.full(py.shape, float("inf"), tl.float32)
    # Per-sample scalars are broadcast to the rows before any comparison (see _composite_kernel).
    row_ok = tl.broadcast_to(num_vertices, py.shape) > 0
    for k in tl.static_range(V):
        vx = tl.load(vertices_ptr + 2 * k)
        vy = tl.load(vertices_ptr + 2 * k + 1)
        ex = tl.load(vertices_ptr + 2 * ((k + 1) % V)) - vx
        ey = tl.broadcast_to(tl.load(vertices_ptr + 2 * ((k + 1) % V) + 1) - vy, py.shape)
        g = ex * (py - vy) + ey * vx
        bound = tl.math.div_rn(g, tl.where(ey == 0, 1.0, ey))
        lower = tl.where(ey < 0, tl.maximum(lower, bound), lower)
        upper = tl.where(ey > 0, tl.minimum(upper, bound), upper)
        row_ok = row_ok & ((ey != 0) | (g >= 0))
    lower = tl.where(row_ok, lower, float("inf"))
    in_box = (rows >= box_y) & (rows < box_y + box_h) & (cols >= box_x) & (cols < box_x + box_w)
    return (px >= lower) & (px <= upper) & in_box


@triton.jit
def _source_offsets(rows, cols, cx, cy, sx, sy, cos, sin, height, width):
    """(BLOCK_H, BLOCK_W) int32 flat index of the pixel cut-paste copies to pixel (rows, cols), as
    `raster.source_pixels`: moved from the centre (cx, cy) to the source (sx, sy), rotated back,
    nearest pixel, clamped to the image."""
    dx = cols.to(tl.float32) + 0.5 - cx
    dy = rows.to(tl.float32) + 0.5 - cy
    qx = tl.floor(sx + dx * cos - dy * sin).to(tl.int32)
    qy = tl.floor(sy + dx * sin + dy * cos).to(tl.int32)
    qx = tl.minimum(tl.maximum(qx, 0), width - 1)
    qy = tl.minimum(tl.maximum(qy, 0), height - 1)
    return qy * width + qx


# --- kernels -------------------------------------------------------------------------------------
# Per-sample arguments (pointers to tensors of B rows): matrix (C, C), bias (C,), fill (C,) in the
# work dtype; vertices (V, 2) float32; num_vertices, fill_mode int64; origins (2,) int64 box
# top-left x, y; centre, source (2,) float32 x, y; cos, sin float32 of the rotation angle.


@triton.jit
def _output_level(x0, x1, x2, matrix_ptr, bias_ptr, sample, c: tl.constexpr, LO: tl.constexpr, HI: tl.constexpr,
                  C: tl.constexpr):
    """Channel c of the jittered pixels as the output stores them: uint8 (LO > 0) truncates
    the offset value to its level, float keeps it. The reference averages these values."""
    value = _jitter_channel(x0, x1, x2, matrix_ptr, bias_ptr, sample, c, LO, HI, C)
    if LO > 0:
        value = tl.floor(value)
    return value


@triton.jit
def _average_kernel(
    sources_ptr, matrix_ptr, bias_ptr, fill_ptr, vertices_ptr, num_vertices_ptr, fill_mode_ptr,
    origins_ptr, centre_ptr, source_ptr, cos_ptr, sin_ptr,
    height, width, box_h, box_w,
    LO: tl.constexpr, HI: tl.constexpr, C: tl.constexpr, V: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    """Grid (B,). For a sample of fill mode "average_colour" with a defect, ``fill[sample, c]`` =
    mean over the defect's pixels of channel c of the jittered source pixels as stored (uint8:
    their levels, plus the rounding offset), walking BLOCK_H rows at a time (BLOCK_W >= box_w)
    over the box's rows that the polygon spans. Other samples do nothing."""
    sample = tl.program_id(0)
    num_vertices = tl.load(num_vertices_ptr + sample)
    if (tl.load(fill_mode_ptr + sample) == AVERAGE) & (num_vertices > 0):
        dtype = matrix_ptr.dtype.element_ty
        plane = height * width
        sources_ptr += sample.to(tl.int64) * C * plane
        vertices_ptr += sample * V * 2
        box_x = tl.load(origins_ptr + 2 * sample).to(tl.int32)
        box_y = tl.load(origins_ptr + 2 * sample + 1).to(tl.int32)
        cx, cy = tl.load(centre_ptr + 2 * sample), tl.load(centre_ptr + 2 * sample + 1)
        sx, sy = tl.load(source_ptr + 2 * sample), tl.load(source_ptr + 2 * sample + 1)
        cos, sin = tl.load(cos_ptr + sample), tl.load(sin_ptr + sample)
        # Rows floor(min y) .. floor(max y) hold every pixel centre the polygon can contain; with
        # the default config at 256 x 256 a scar spans about a quarter of the box's rows, a
        # polygon half. Samples without a defect (label 0) have nothing to average.
        top, bottom = tl.load(vertices_ptr + 1), tl.load(vertices_ptr + 1)
        for k in tl.static_range(1, V):
            top = tl.minimum(top, tl.load(vertices_ptr + 2 * k + 1))
            bottom = tl.maximum(bottom, tl.load(vertices_ptr + 2 * k + 1))
        first = tl.maximum(tl.floor(top).to(tl.int32), box_y)
        end = tl.minimum(tl.floor(bottom).to(tl.int32) + 1, box_y + box_h)
        cols = box_x + tl.arange(0, BLOCK_W)[None, :]
        # Sums per channel (total1, total2 stay unused for C == 1) and the pixel count.
        total0 = tl.zeros((BLOCK_H, BLOCK_W), dtype)
        total1 = tl.zeros((BLOCK_H, BLOCK_W), dtype)
        total2 = tl.zeros((BLOCK_H, BLOCK_W), dtype)
        count = tl.zeros((BLOCK_H, BLOCK_W), tl.int32)
        for r in range(first, end, BLOCK_H):
            rows = r + tl.arange(0, BLOCK_H)[:, None]
            inside = _inside(rows, cols, vertices_ptr, num_vertices, box_x, box_y, box_h, box_w, V)
            offsets = _source_offsets(rows, cols, cx, cy, sx, sy, cos, sin, height, width)
            s0, s1, s2 = _load_channels(sources_ptr, offsets, plane, inside, dtype, C)
            total0 += tl.where(inside, _output_level(s0, s1, s2, matrix_ptr, bias_ptr, sample, 0, LO, HI, C), 0.0)
            if C == 3:
                total1 += tl.where(inside, _output_level(s0, s1, s2, matrix_ptr, bias_ptr, sample, 1, LO, HI, C), 0.0)
                total2 += tl.where(inside, _output_level(s0, s1, s2, matrix_ptr, bias_ptr, sample, 2, LO, HI, C), 0.0)
            count += inside.to(tl.int32)
        # Back into work units: uint8 adds the rounding offset LO again, as the reference does.
        pixels = tl.maximum(tl.sum(count), 1).to(dtype)
        tl.store(fill_ptr + sample * C, tl.sum(total0) / pixels + LO)
        if C == 3:
            tl.store(fill_ptr + sample * C + 1, tl.sum(total1) / pixels + LO)
            tl.store(fill_ptr + sample * C + 2, tl.sum(total2) / pixels + LO)


@triton.jit
def _composite_kernel(
    images_ptr, sources_ptr, out_ptr, masks_ptr,
    matrix_ptr, bias_ptr, fill_ptr, vertices_ptr, num_vertices_ptr, fill_mode_ptr,
    origins_ptr, centre_ptr, source_ptr, cos_ptr, sin_ptr,
    height, width, box_h, box_w, tiles_w, tiles_per_image,
    LO: tl.constexpr, HI: tl.constexpr, C: tl.constexpr, V: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    """Grid (B * tiles_per_image,): one program per sample and BLOCK_H x BLOCK_W tile. Writes the
    composite to ``out`` (B, C, H, W) and the defect to ``masks`` (B, 1, H, W) uint8."""
    pid = tl.program_id(0)
    sample = pid // tiles_per_image
    tile = pid % tiles_per_image
    rows = (tile // tiles_w) * BLOCK_H + tl.arange(0, BLOCK_H)[:, None]
    cols = (tile % tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)[None, :]
    valid = (rows < height) & (cols < width)
    offsets = rows * width + cols
    plane = height * width
    image_start = sample.to(tl.int64) * C * plane
    dtype = matrix_ptr.dtype.element_ty

    x0, x1, x2 = _load_channels(images_ptr + image_start, offsets, plane, valid, dtype, C)

    box_x = tl.load(origins_ptr + 2 * sample).to(tl.int32)
    box_y = tl.load(origins_ptr + 2 * sample + 1).to(tl.int32)
    inside = _inside(rows, cols, vertices_ptr + sample * V * 2, tl.load(num_vertices_ptr + sample),
                     box_x, box_y, box_h, box_w, V)

    # Cut-paste gathers its source pixels, only inside the defect. The mode is compared as a block:
    # Triton's interpreter mistypes a scalar comparison that is then combined with a block.
    cut_paste = tl.broadcast_to(tl.load(fill_mode_ptr + sample), (BLOCK_H, BLOCK_W)) == CUT_PASTE
    source_offsets = _source_offsets(
        rows, cols, tl.load(centre_ptr + 2 * sample), tl.load(centre_ptr + 2 * sample + 1),
        tl.load(source_ptr + 2 * sample), tl.load(source_ptr + 2 * sample + 1),
        tl.load(cos_ptr + sample), tl.load(sin_ptr + sample), height, width,
    )
    s0, s1, s2 = _load_channels(sources_ptr + image_start, source_offsets, plane, inside & cut_paste,
                                dtype, C)

    for c in tl.static_range(C):
        jittered = _jitter_channel(x0, x1, x2, matrix_ptr, bias_ptr, sample, c, LO, HI, C)
        patch = _jitter_channel(s0, s1, s2, matrix_ptr, bias_ptr, sample, c, LO, HI, C)
        fill = tl.where(cut_paste, patch, tl.load(fill_ptr + sample * C + c))
        value = tl.where(inside, fill, jittered)
        tl.store(out_ptr + image_start + c * plane + offsets, value.to(out_ptr.dtype.element_ty), mask=valid)
    tl.store(masks_ptr + sample.to(tl.int64) * plane + offsets, inside.to(tl.uint8), mask=valid)
