"""Self-checks of exercise 09, capstone: image captioning.

from course_lib.checks import (check_attention_on_object, check_caption_maps, check_object_patches,
                               check_point_to_cell, check_to_patch_grid, check_upsample_patches)

The hidden tests share the helpers that are not exported: the references
(``reference_*``), the seeded test model (``tiny_captioning_model``) and the diagnoses
that name a usual mistake (``*_mistake``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..data import CELL, EOS, patchify
from ..models import EncoderDecoder, captioning_model, greedy_decode
from ._common import Check, describe
from .ex08 import sharpened_output

__all__ = [
    "check_point_to_cell",
    "check_attention_on_object",
    "check_caption_maps",
    "check_object_patches",
    "check_to_patch_grid",
    "check_upsample_patches",
]


def as_tensor_or_none(value: Any) -> torch.Tensor | None:
    """A tensor or a numpy array as a tensor; None for anything else."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray) and (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
        return torch.from_numpy(value)
    return None


def _same(got: torch.Tensor, expected: torch.Tensor) -> bool:
    if tuple(got.shape) != tuple(expected.shape):
        return False
    if expected.dtype == torch.bool:
        return bool(torch.equal(got.bool(), expected))
    return bool(torch.allclose(got.double(), expected.double(), atol=1e-6))


# -- task 1: patches back on the grid ------------------------------------------------------------


def reference_patch_grid(weights: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """``(..., grid_h * grid_w)`` → ``(..., grid_h, grid_w)``: patch ``i`` at row ``i // grid_w``, column
    ``i % grid_w``."""
    return weights.reshape(*weights.shape[:-1], grid_h, grid_w)


def grid_mistake(weights: torch.Tensor, grid_h: int, grid_w: int, got: Any) -> str | None:
    """Name the usual mistake that explains the student's grid, if one does."""
    got = as_tensor_or_none(got)
    if got is None:
        return None
    lead = weights.shape[:-1]
    if tuple(got.shape) == (*lead, grid_w, grid_h) and grid_h != grid_w:
        return (
            f"the grid is (grid_w, grid_h) = ({grid_w}, {grid_h}); it is (grid_h, grid_w): grid_h rows of grid_w "
            "patches"
        )
    if tuple(got.shape[-2:]) == (grid_h, grid_w) and tuple(got.shape[:-2]) != tuple(lead):
        kept = f"keep the leading axes {tuple(lead)} as they are" if lead else "add no axis"
        return f"{kept}: reshape only the last axis, weights.reshape(*weights.shape[:-1], grid_h, grid_w)"
    column_major = weights.reshape(*lead, grid_w, grid_h).transpose(-1, -2)
    if _same(got, column_major):
        return (
            "the patches are laid out column by column; patchify numbers them row by row (raster order): patch i sits "
            "at row i // grid_w and column i % grid_w"
        )
    return None


def check_to_patch_grid(to_patch_grid: Callable) -> None:
    """Check ``to_patch_grid(weights, grid_h, grid_w) -> (..., grid_h, grid_w)``."""
    c = Check("to_patch_grid")
    weights = torch.arange(6.0)
    got = c.call(to_patch_grid, weights.clone(), 2, 3)
    grid = as_tensor_or_none(got)
    c.true(grid is not None, "to_patch_grid should return a tensor", got=describe(got))
    hint = grid_mistake(weights, 2, 3, grid)
    c.shape(grid, (2, 3), "patches 0..5 on a grid of 2 rows and 3 columns", hint)
    c.true(
        _same(grid, torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])),
        "patches 0..5 on a 2 × 3 grid: patchify's raster order puts 0 1 2 on the first row, 3 4 5 on the second",
        got=grid.tolist(),
        hint=hint,
    )
    weights = torch.rand(2, 5, 12, generator=torch.Generator().manual_seed(9))
    got = c.call(to_patch_grid, weights.clone(), 3, 4)
    grid = as_tensor_or_none(got)
    c.true(grid is not None, "to_patch_grid should return a tensor", got=describe(got))
    hint = grid_mistake(weights, 3, 4, grid)
    c.shape(grid, (2, 5, 3, 4), "a (2, 5, 12) batch of weights on a 3 × 4 grid", hint or "keep the leading axes")
    c.close(grid, reference_patch_grid(weights, 3, 4), "a (2, 5, 12) batch of weights on a 3 × 4 grid", hint)
    c.done()


# -- task 2: patches to pixels -------------------------------------------------------------------


def reference_upsample(grid: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``(..., grid_h, grid_w)`` → ``(..., grid_h * p, grid_w * p)``: each value fills its ``p × p`` block."""
    return grid.repeat_interleave(patch_size, dim=-2).repeat_interleave(patch_size, dim=-1)


def upsample_mistake(grid: torch.Tensor, patch_size: int, got: Any) -> str | None:
    """Name the usual mistake that explains the student's pixels, if one does."""
    got = as_tensor_or_none(got)
    if got is None:
        return None
    p, (gh, gw) = patch_size, grid.shape[-2:]
    lead = grid.shape[:-2]
    if tuple(got.shape) == (*lead, gh * p, gw) or tuple(got.shape) == (*lead, gh, gw * p):
        return "repeat along both spatial axes: rows (dim=-2) and columns (dim=-1)"
    reps = (1,) * len(lead) + (p, p)
    if _same(got, grid.repeat(*reps)):
        return (
            "you tiled the whole grid p × p times (repeat); each patch's value must fill its own p × p block: "
            "repeat_interleave(p, dim=-2) then repeat_interleave(p, dim=-1)"
        )
    right = reference_upsample(grid, p)
    if _same(got, right / p**2):
        return "keep each patch's weight as it is; do not divide it among the pixels"
    return None


def check_upsample_patches(upsample_patches: Callable) -> None:
    """Check ``upsample_patches(grid, patch_size) -> (..., grid_h * p, grid_w * p)``."""
    c = Check("upsample_patches")
    grid = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    got = c.call(upsample_patches, grid.clone(), 2)
    pixels = as_tensor_or_none(got)
    c.true(pixels is not None, "upsample_patches should return a tensor", got=describe(got))
    hint = upsample_mistake(grid, 2, pixels)
    c.shape(pixels, (4, 6), "a 2 × 3 grid of 2 × 2 patches", hint or "(grid_h · patch_size, grid_w · patch_size)")
    c.true(
        _same(pixels, reference_upsample(grid, 2)),
        "each value should fill its own 2 × 2 block: the first two rows read 1 1 2 2 3 3",
        got=pixels.tolist(),
        hint=hint,
    )
    grid = torch.rand(3, 2, 2, generator=torch.Generator().manual_seed(4))
    got = c.call(upsample_patches, grid.clone(), 3)
    pixels = as_tensor_or_none(got)
    c.true(pixels is not None, "upsample_patches should return a tensor", got=describe(got))
    hint = upsample_mistake(grid, 3, pixels)
    c.shape(pixels, (3, 6, 6), "a batch of three 2 × 2 grids of 3 × 3 patches", hint or "keep the leading axes")
    c.close(pixels, reference_upsample(grid, 3), "a batch of three 2 × 2 grids of 3 × 3 patches", hint)
    c.done()


# -- task 3: which patches an object touches -----------------------------------------------------


def reference_object_patches(pixel_mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``(..., H, W)`` bool → ``(..., num_patches)`` bool: the patches (raster order) that hold a True pixel."""
    *lead, h, w = pixel_mask.shape
    flat = pixel_mask.reshape(-1, 1, h, w).float()
    touched = patchify(flat, patch_size).amax(dim=-1) > 0  # (N, num_patches)
    return touched.reshape(*lead, touched.shape[-1])


def object_patches_mistake(pixel_mask: torch.Tensor, patch_size: int, got: Any) -> str | None:
    """Name the usual mistake that explains the student's patches, if one does."""
    got = as_tensor_or_none(got)
    if got is None:
        return None
    *lead, h, w = pixel_mask.shape
    p, gh, gw = patch_size, h // patch_size, w // patch_size
    if got.dtype != torch.bool and got.is_floating_point():
        return "return a boolean mask (True = the object touches the patch), not fractions"
    counts = patchify(pixel_mask.reshape(-1, 1, h, w).float(), p).sum(dim=-1).reshape(*lead, gh * gw)
    variants = [
        (
            counts == p * p,
            "a patch counts when it holds at least one pixel of the object (any), not only when the object covers "
            "it all (all)",
        ),
        (
            counts > p * p / 2,
            "a patch counts when it holds at least one pixel of the object (any), not only when the object covers "
            "most of it",
        ),
        (
            reference_object_patches(pixel_mask.transpose(-1, -2), p),  # the transposed image's raster order
            "the patches are numbered column by column; patchify numbers them row by row: patch i sits at row "
            "i // grid_w and column i % grid_w",
        ),
        (
            pixel_mask.reshape(*lead, gh * gw, p * p).any(dim=-1),
            "reshaping (H, W) straight to (num_patches, p·p) groups p·p consecutive pixels of a row, not a square "
            "patch: split both axes first, (grid_h, p, grid_w, p), and bring the two p axes together",
        ),
    ]
    for candidate, hint in variants:
        if not _same(candidate, reference_object_patches(pixel_mask, p)) and _same(got.bool(), candidate):
            return hint
    return None


def check_object_patches(object_patches: Callable) -> None:
    """Check ``object_patches(pixel_mask, patch_size) -> (..., num_patches)`` bool."""
    c = Check("object_patches")
    mask = torch.zeros(4, 6, dtype=torch.bool)  # a 2 × 3 grid of 2 × 2 patches
    mask[1, 1:3] = True  # one row of pixels across patches 0 and 1
    mask[3, 5] = True  # one pixel in patch 5
    got = c.call(object_patches, mask.clone(), 2)
    patches = as_tensor_or_none(got)
    c.true(patches is not None, "object_patches should return a tensor", got=describe(got))
    hint = object_patches_mistake(mask, 2, patches)
    c.shape(patches, (6,), "a 4 × 6 image cut into 2 × 2 patches (2 rows of 3)", hint or "one entry per patch")
    c.true(
        _same(patches.bool(), torch.tensor([True, True, False, False, False, True])) and patches.dtype == torch.bool,
        "the object touches patches 0 and 1 (top row) and 5 (bottom right), in patchify's raster order",
        got=patches.tolist(),
        hint=hint,
    )
    mask = torch.rand(2, 8, 12, generator=torch.Generator().manual_seed(5)) > 0.93
    got = c.call(object_patches, mask.clone(), 4)
    patches = as_tensor_or_none(got)
    c.true(patches is not None, "object_patches should return a tensor", got=describe(got))
    hint = object_patches_mistake(mask, 4, patches)
    c.shape(patches, (2, 6), "two 8 × 12 masks cut into 4 × 4 patches", hint or "keep the leading axes")
    c.true(
        _same(patches.bool(), reference_object_patches(mask, 4)),
        "two random 8 × 12 masks cut into 4 × 4 patches: wrong patches",
        got=patches.int().tolist(),
        hint=hint,
    )
    c.done()


# -- task 4: attention mass on the object --------------------------------------------------------


def reference_attention_on_object(weights: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """``(mass, chance)``: the mean attention mass on the target patches, and the mean fraction of patches that
    are targets, both over the rows that have a target."""
    rows = targets.any(dim=-1)
    mass = (weights * targets).sum(dim=-1)[rows].mean()
    chance = targets.float().mean(dim=-1)[rows].mean()
    return float(mass), float(chance)


def as_pair(value: Any) -> tuple[float, float] | None:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        return None
    out = []
    for v in value:
        if isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
            out.append(float(v))
        elif isinstance(v, (torch.Tensor, np.ndarray)) and np.size(v) == 1:
            out.append(float(np.asarray(v.detach() if isinstance(v, torch.Tensor) else v).reshape(())))
        else:
            return None
    return out[0], out[1]


def object_mistake(weights: torch.Tensor, targets: torch.Tensor, got: tuple[float, float] | None) -> str | None:
    """Name the usual mistake that explains the student's ``(mass, chance)``, if one does."""
    if got is None:
        return None
    mass, chance = reference_attention_on_object(weights, targets)
    rows = targets.any(dim=-1)
    on = (weights * targets).sum(dim=-1)
    fraction = targets.float().mean(dim=-1)
    hints = [
        (
            abs(got[0] - float(on.mean())) < 1e-6 and abs(float(on.mean()) - mass) > 1e-6,
            "the mass is averaged over every row; count only the rows that have a target (targets.any(-1)): 'and', "
            "<eos> and padding describe no object",
        ),
        (
            abs(got[1] - float(fraction.mean())) < 1e-6 and abs(float(fraction.mean()) - chance) > 1e-6,
            "chance is averaged over every row; count only the rows that have a target, as for the mass",
        ),
        (
            abs(got[0] - float((weights * targets).amax(dim=-1)[rows].mean())) < 1e-6,
            "the mass on the object is the *sum* of the weights on its patches, not their maximum",
        ),
        (
            abs(got[0] - float((weights * targets).sum(dim=-1)[rows].mean() / weights.shape[-1])) < 1e-6,
            "the mass on the object is the sum of the weights on its patches, not their mean over all patches",
        ),
        (
            abs(got[1] - float(targets.float().sum(dim=-1)[rows].mean())) < 1e-6,
            "chance is the *fraction* of the patches that are targets (count / num_patches)",
        ),
        (abs(got[0] - chance) < 1e-6 and abs(got[1] - mass) < 1e-6, "return (mass, chance), in that order"),
    ]
    for condition, hint in hints:
        if condition:
            return hint
    return None


def check_attention_on_object(attention_on_object: Callable) -> None:
    """Check ``attention_on_object(weights, targets) -> (mass, chance)``."""
    c = Check("attention_on_object")
    weights = torch.tensor([[[0.5, 0.3, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25], [0.1, 0.1, 0.1, 0.7]]])
    targets = torch.tensor([[[True, True, False, False], [False, False, False, False], [False, False, False, True]]])
    got = c.call(attention_on_object, weights.clone(), targets.clone())
    pair = as_pair(got)
    c.true(pair is not None, "attention_on_object should return two numbers: (mass, chance)", got=describe(got))
    hint = object_mistake(weights, targets, pair)
    c.true(
        abs(pair[0] - 0.75) < 1e-6,
        "row 0 puts 0.5 + 0.3 = 0.8 on its 2 target patches, row 2 puts 0.7 on its one; row 1 has no target and "
        "does not count: the mass is (0.8 + 0.7) / 2 = 0.75",
        got=round(pair[0], 4),
        hint=hint,
    )
    c.true(
        abs(pair[1] - 0.375) < 1e-6,
        "the targets cover 2 of 4 patches in row 0 and 1 of 4 in row 2: chance is (0.5 + 0.25) / 2 = 0.375",
        got=round(pair[1], 4),
        hint=hint,
    )
    c.done()


# -- task 5: a caption and its attention maps ----------------------------------------------------


def tiny_captioning_model(
    seed: int, *, num_patches: int = 6, patch_dim: int = 48, vocab: int = 9, eos_bias: float = 0.0
) -> EncoderDecoder:
    """A small untrained ``captioning_model`` whose captions end at different steps.

    As ``ex08.tiny_translation_model``: a sharpened output layer without bias, so that
    the image picks the tokens; ``<pad>`` and ``<bos>`` are made unlikely.
    """
    model = captioning_model(
        patch_dim, num_patches, vocab, d_model=16, num_heads=2, num_layers=2, d_ff=32, max_len=12, seed=seed
    )
    return sharpened_output(model, eos_bias)


def _caption_maps(
    model: EncoderDecoder,
    images: torch.Tensor,
    patch_size: int,
    max_len: int,
    *,
    layers=None,
    zero_after=True,
    zero_eos=False,
) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = images.shape[-2:]
    patches = patchify(images, patch_size)
    tokens, weights = greedy_decode(model, patches, None, max_len=max_len, need_weights=True)
    chosen = weights if layers is None else [weights[i] for i in layers]
    mean = torch.stack(chosen).mean(dim=(0, 2))  # over the layers and the heads: (batch, n, num_patches)
    grid = reference_patch_grid(mean, h // patch_size, w // patch_size)
    maps = reference_upsample(grid, patch_size)
    if zero_after:
        finished = torch.cumsum((tokens == EOS).long(), dim=1) > 0  # at and after each caption's <eos>
        after = finished if zero_eos else finished & (tokens != EOS)
        maps = maps.masked_fill(after[..., None, None], 0.0)
    return tokens, maps


def reference_caption_maps(
    model: EncoderDecoder, images: torch.Tensor, patch_size: int, max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy caption ``(batch, n)`` and, per token, its cross-attention averaged over every layer and head on
    the pixel grid ``(batch, n, H, W)``; zero after the caption's ``<eos>``."""
    return _caption_maps(model, images, patch_size, max_len)


def caption_maps_mistake(model, images, patch_size, max_len, tokens, maps) -> str | None:
    """Name the usual mistake that explains the student's maps, if one does."""
    maps = as_tensor_or_none(maps)
    if maps is None:
        return None
    num_layers = len(model.decoder.layers)
    variants = [
        (
            _caption_maps(model, images, patch_size, max_len, layers=[num_layers - 1])[1],
            "average over every layer, not only the last one: torch.stack(weights).mean(dim=(0, 2))",
        ),
        (
            _caption_maps(model, images, patch_size, max_len, layers=[0])[1],
            "average over every layer, not only the first one: torch.stack(weights).mean(dim=(0, 2))",
        ),
        (
            _caption_maps(model, images, patch_size, max_len, zero_after=False)[1],
            "the rows after a caption's <eos> belong to its padding: set their maps to zero",
        ),
        (
            _caption_maps(model, images, patch_size, max_len, zero_eos=True)[1],
            "keep the map of the <eos> token itself; only the rows after it are zero",
        ),
    ]
    for candidate, hint in variants:
        if _same(maps, candidate):
            return hint
    return None


def check_caption_maps(caption_maps: Callable) -> None:
    """Check ``caption_maps(model, images, patch_size, max_len) -> (tokens, maps)``."""
    c = Check("caption_maps")
    model = tiny_captioning_model(seed=3, num_patches=4, patch_dim=48, eos_bias=1.0)
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    expected_tokens, expected_maps = reference_caption_maps(model, images, 4, max_len=8)
    result = c.call(caption_maps, model, images.clone(), 4, 8)
    c.true(
        isinstance(result, (tuple, list)) and len(result) == 2,
        "caption_maps should return two tensors: (tokens, maps)",
        got=describe(result),
    )
    tokens, maps = as_tensor_or_none(result[0]), as_tensor_or_none(result[1])
    c.true(tokens is not None and maps is not None, "caption_maps should return two tensors", got=describe(result))
    c.true(
        _same(tokens, expected_tokens),
        "the tokens should be greedy_decode's caption of the patches",
        got=tokens.tolist(),
        hint="tokens, weights = greedy_decode(model, patchify(images, patch_size), None, max_len=max_len, "
        "need_weights=True)",
    )
    hint = caption_maps_mistake(model, images, 4, 8, tokens, maps)
    n = expected_tokens.shape[1]
    c.shape(maps, (3, n, 8, 8), f"the maps of 3 captions of {n} tokens over 8 × 8 images", hint)
    c.close(maps, expected_maps, "the attention maps", hint)
    c.done()


# -- task 6: point at the cell -------------------------------------------------------------------


def _cells(maps: torch.Tensor, *, normalise=True, border=1.0, offset=0.0, clamp=True, rounding="floor", swap=False):
    """The cell of each map's centre of mass, with the knobs that the usual mistakes turn."""
    maps = maps.double()
    h, w = maps.shape[-2:]
    total = maps.sum(dim=(-2, -1))
    ys = torch.arange(h, dtype=torch.float64) + offset
    xs = torch.arange(w, dtype=torch.float64) + offset
    y = (maps.sum(dim=-1) * ys).sum(dim=-1)
    x = (maps.sum(dim=-2) * xs).sum(dim=-1)
    if normalise:
        y, x = y / total.clamp(min=1e-300), x / total.clamp(min=1e-300)
    cell = torch.stack([y, x], dim=-1).sub(border).div(CELL)
    cell = cell.floor() if rounding == "floor" else cell.round()
    if clamp:
        cell = cell.clamp(0, 2)
    cell = cell.long()
    if swap:
        cell = cell.flip(-1)
    return cell.masked_fill((total <= 0)[..., None], -1)


def reference_point_to_cell(maps: torch.Tensor) -> torch.Tensor:
    """``(..., H, W)`` maps → ``(..., 2)`` long: the ``(row, col)`` of the 3 × 3 cell that holds each map's
    centre of mass (pixel ``(i, j)`` at ``(i, j)``; cell ``floor((y - 1) / 10)``, clamped to 0..2);
    ``(-1, -1)`` for a map that is zero everywhere."""
    return _cells(maps)


def _argmax_cells(maps: torch.Tensor) -> torch.Tensor:
    h, w = maps.shape[-2:]
    flat = maps.reshape(*maps.shape[:-2], h * w).argmax(dim=-1)
    yx = torch.stack([flat // w, flat % w], dim=-1).double()
    cell = yx.sub(1).div(CELL).floor().clamp(0, 2).long()
    return cell.masked_fill((maps.sum(dim=(-2, -1)) <= 0)[..., None], -1)


def cell_mistake(maps: torch.Tensor, got: Any) -> str | None:
    """Name the usual mistake that explains the student's cells, if one does."""
    got = as_tensor_or_none(got)
    if got is None:
        return None
    right = reference_point_to_cell(maps)
    if tuple(got.shape) != tuple(right.shape):
        if tuple(got.shape) == tuple(right.shape[:-1]) + (1,) or tuple(got.shape) == tuple(right.shape[:-1]):
            return "return both coordinates, (row, col), on a last axis of size 2"
        return None
    if got.is_floating_point() and bool(torch.isnan(got).any()):
        return "a map that is zero everywhere has no centre of mass (0 / 0 is NaN): return (-1, -1) for it"
    nonzero = maps.sum(dim=(-2, -1)) > 0
    if torch.equal(got.long()[nonzero], right[nonzero]) and not torch.equal(got.long(), right):
        return "a map that is zero everywhere has no centre of mass: return (-1, -1) for it"
    variants = [
        (
            _cells(maps, swap=True),
            "the coordinates are swapped: return (row, col), the row from the vertical axis (dim -2) first",
        ),
        (
            _cells(maps, normalise=False),
            "divide by the map's total: the centre of mass is sum(weight · coordinate) / sum(weight)",
        ),
        (
            _cells(maps, border=0.0),
            "the grid starts after a 1-pixel border: the cell is floor((y - 1) / 10), not floor(y / 10)",
        ),
        (_cells(maps, offset=0.5), "pixel (i, j) sits at coordinate (i, j), not at (i + 0.5, j + 0.5)"),
        (
            _cells(maps, clamp=False),
            "clamp the cell to 0..2: a centre of mass in the border (y < 1 or y >= 31) belongs to the nearest cell",
        ),
        (
            _cells(maps, rounding="round"),
            "a cell is floor((y - 1) / 10): round() moves the upper half of a cell into the next one",
        ),
        (
            _argmax_cells(maps),
            "that is the cell of the brightest pixel; the task asks for the centre of mass, which weighs every pixel",
        ),
    ]
    for candidate, hint in variants:
        if not torch.equal(candidate, right) and torch.equal(got.long(), candidate):
            return hint
    return None


def point_maps(points: list[list[tuple[int, int, float]]], size: int = 32) -> torch.Tensor:
    """``(len(points), size, size)`` maps, each the listed pixels ``(y, x, weight)`` and zero elsewhere."""
    maps = torch.zeros(len(points), size, size)
    for k, pixels in enumerate(points):
        for y, x, weight in pixels:
            maps[k, y, x] += weight
    return maps


def check_point_to_cell(point_to_cell: Callable) -> None:
    """Check ``point_to_cell(maps) -> (..., 2)`` long cells."""
    c = Check("point_to_cell")
    maps = point_maps(
        [
            [(4, 4, 1.2), (26, 15, 0.8)],  # two blobs: the centre (12.8, 8.4) lies between them, in cell (1, 0)
            [(10, 22, 0.8), (11, 23, 0.2)],  # centre (10.2, 22.2): on a cell border, cell (0, 2)
            [(10, 30, 0.4), (11, 31, 0.6)],  # centre (10.6, 30.6): cell (0, 2)
            [(31, 0, 1.0)],  # in the border: cell (2, 0)
            [],  # zero everywhere
        ]
    ).reshape(5, 1, 32, 32)
    got = c.call(point_to_cell, maps.clone())
    cells = c.array(got, "point_to_cell(maps)")
    hint = cell_mistake(maps, got)
    expected = reference_point_to_cell(maps)
    c.shape(cells, (5, 1, 2), "the cells of 5 maps of shape (5, 1, 32, 32)", hint)
    c.true(
        np.issubdtype(cells.dtype, np.integer),
        "the cells should be integers (a long tensor)",
        got=describe(got),
        hint=hint or "torch.floor(...).long()",
    )
    wrong = [k for k in range(5) if not np.array_equal(cells.reshape(5, 2)[k], expected.reshape(5, 2)[k].numpy())]
    c.true(
        not wrong,
        "wrong cells for the centres (12.8, 8.4), (10.2, 22.2), (10.6, 30.6), (31, 0) and an empty map",
        got=wrong
        and f"map {wrong[0]}: {cells.reshape(5, 2)[wrong[0]].tolist()}, expected "
        f"{expected.reshape(5, 2)[wrong[0]].tolist()}",
        hint=hint,
    )
    c.done()
