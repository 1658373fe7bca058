"""Hidden tests of exercise 09, capstone: image captioning.

Each test probes one property on seeded inputs, so that each typical mistake loses its
own points, and its message names the concept (students see the message, never this
code). Images are small and often not square (8 × 12 pixels, a 2 × 3 patch grid), so
that a transposed grid cannot pass; the captioning model is small and untrained, built
inside the student's worker from ``course_lib`` with the grader's state dict.
``tests/exercises/mutants_09_capstone_captioning.py`` lists the mistakes these tests must
catch; ``tests/grading/test_mutants.py`` proves that they do.
"""

import pytest
import torch

from course_lib.checks import describe
from course_lib.checks.ex09 import (
    as_pair,
    caption_maps_mistake,
    cell_mistake,
    grid_mistake,
    object_mistake,
    object_patches_mistake,
    point_maps,
    reference_attention_on_object,
    reference_caption_maps,
    reference_object_patches,
    reference_patch_grid,
    reference_point_to_cell,
    reference_upsample,
    tiny_captioning_model,
    upsample_mistake,
)
from course_lib.data import COLOURS, EOS, make_caption_task, patchify, render_scenes
from course_lib.grading import substitute

NOTEBOOK_RUNS_POINTS = 1


def as_tensor(value, what: str) -> torch.Tensor:
    assert isinstance(value, torch.Tensor), f"{what} should be a torch tensor, got {describe(value)}"
    return value


def same(got: torch.Tensor, expected: torch.Tensor) -> bool:
    if tuple(got.shape) != tuple(expected.shape):
        return False
    if expected.dtype == torch.bool:
        return bool(torch.equal(got.bool(), expected))
    return bool(torch.allclose(got.double(), expected.double(), atol=1e-6))


def hint_of(hint: str | None, default: str) -> str:
    return hint or default


# -- task 1: patches back on the grid ------------------------------------------------------------


def patch_grid(student, weights, grid_h, grid_w) -> torch.Tensor:
    return as_tensor(student.to_patch_grid(weights.clone(), grid_h, grid_w), "to_patch_grid's result")


@pytest.mark.task("to_patch_grid")
class TestToPatchGrid:
    @pytest.mark.points(1)
    def test_shape_of_a_non_square_grid(self, student):
        """(..., grid_h * grid_w) becomes (..., grid_h, grid_w), also when grid_h ≠ grid_w"""
        weights = torch.rand(7, 6, generator=torch.Generator().manual_seed(40))
        for grid_h, grid_w in ((2, 3), (3, 2)):
            got = patch_grid(student, weights, grid_h, grid_w)
            assert tuple(got.shape) == (7, grid_h, grid_w), (
                f"7 rows of 6 patch weights on {grid_h} rows × {grid_w} columns of patches should be (7, {grid_h}, "
                f"{grid_w}), got {tuple(got.shape)}: "
                + hint_of(grid_mistake(weights, grid_h, grid_w, got), "reshape the last axis to (grid_h, grid_w)")
            )

    @pytest.mark.points(1)
    @pytest.mark.parametrize("grid_h, grid_w", [(3, 5), (4, 4)], ids=["3x5", "4x4"])
    def test_patches_land_where_patchify_took_them(self, student, grid_h, grid_w):
        """the value of each patch lands on the grid cell that patchify cut it from"""
        g = torch.Generator().manual_seed(41 + grid_w)
        truth = torch.rand(grid_h, grid_w, generator=g)  # one value per patch, painted over a 2-pixel patch
        image = reference_upsample(truth, 2)[None, None]  # (1, 1, 2 * grid_h, 2 * grid_w)
        per_patch = patchify(image, 2)[0, :, 0]  # (num_patches,), in patchify's order
        got = patch_grid(student, per_patch, grid_h, grid_w)
        assert same(got, truth), f"on a {grid_h} × {grid_w} grid the patches are in the wrong places: " + hint_of(
            grid_mistake(per_patch, grid_h, grid_w, got),
            "patchify numbers the patches row by row: patch i sits at row i // grid_w, column i % grid_w",
        )

    @pytest.mark.points(1)
    def test_leading_axes_are_kept(self, student):
        """leading axes (batch, heads, words) stay as they are"""
        weights = torch.rand(2, 3, 4, 12, generator=torch.Generator().manual_seed(43))
        got = patch_grid(student, weights, 4, 3)
        expected = reference_patch_grid(weights, 4, 3)
        assert same(got, expected), (
            f"weights of shape (2, 3, 4, 12) on a 4 × 3 grid should give (2, 3, 4, 4, 3) with each row's patches "
            f"in raster order, got {describe(got, sums=False)}: "
            + hint_of(grid_mistake(weights, 4, 3, got), "reshape only the last axis")
        )


# -- task 2: patches to pixels -------------------------------------------------------------------


def upsample(student, grid, patch_size) -> torch.Tensor:
    return as_tensor(student.upsample_patches(grid.clone(), patch_size), "upsample_patches's result")


@pytest.mark.task("upsample_patches")
class TestUpsamplePatches:
    @pytest.mark.points(1)
    def test_shape(self, student):
        """(..., grid_h, grid_w) becomes (..., grid_h * patch_size, grid_w * patch_size)"""
        grid = torch.rand(5, 2, 3, generator=torch.Generator().manual_seed(50))
        got = upsample(student, grid, 4)
        assert tuple(got.shape) == (5, 8, 12), (
            f"5 grids of 2 × 3 patches of 4 × 4 pixels should give (5, 8, 12), got {tuple(got.shape)}: "
            + hint_of(upsample_mistake(grid, 4, got), "repeat each value along the rows and the columns")
        )

    @pytest.mark.points(1)
    def test_each_value_fills_its_own_block(self, student):
        """pixel (y, x) holds the value of patch (y // patch_size, x // patch_size)"""
        grid = torch.rand(3, 2, generator=torch.Generator().manual_seed(51))
        got = upsample(student, grid, 4)
        assert same(got, reference_upsample(grid, 4)), (
            "each patch's value should fill its own 4 × 4 block of pixels: "
            + hint_of(upsample_mistake(grid, 4, got), "repeat_interleave along dim -2 and dim -1")
        )

    @pytest.mark.points(1)
    def test_leading_axes(self, student):
        """a batch of grids is upsampled grid by grid"""
        grid = torch.rand(2, 3, 2, 4, generator=torch.Generator().manual_seed(52))
        got = upsample(student, grid, 3)
        assert same(got, reference_upsample(grid, 3)), (
            f"grids of shape (2, 3, 2, 4) with 3-pixel patches should give (2, 3, 6, 12), got "
            f"{describe(got, sums=False)}: "
            + hint_of(upsample_mistake(grid, 3, got), "repeat along the last two axes only")
        )


# -- task 3: which patches an object touches -----------------------------------------------------


def patch_lists(got: torch.Tensor) -> list:
    """The indices of the True patches of each row, or the raw values when they are not one mask per row."""
    if got.dim() == 2 and got.dtype == torch.bool:
        return [row.nonzero().flatten().tolist() for row in got]
    return got.tolist()


def touched(student, mask, patch_size) -> torch.Tensor:
    return as_tensor(student.object_patches(mask.clone(), patch_size), "object_patches's result")


@pytest.mark.task("object_patches")
class TestObjectPatches:
    @pytest.mark.points(1)
    def test_shape_and_dtype(self, student):
        """(..., H, W) becomes a bool mask (..., num_patches)"""
        mask = torch.rand(3, 16, 24, generator=torch.Generator().manual_seed(60)) > 0.9
        got = touched(student, mask, 8)
        assert tuple(got.shape) == (3, 6), (
            f"three 16 × 24 masks cut into 8 × 8 patches (2 rows of 3) should give (3, 6), got {tuple(got.shape)}"
        )
        assert got.dtype == torch.bool, (
            f"object_patches should return a bool mask (True = the object touches the patch), got {got.dtype}"
        )

    @pytest.mark.points(1)
    def test_one_pixel_is_enough(self, student):
        """a patch that holds a single pixel of the object counts"""
        mask = torch.zeros(16, 24, dtype=torch.bool)
        mask[7, 16] = True  # bottom-left pixel of patch 2 (row 0, column 2)
        mask[8:16, 0:8] = True  # all of patch 3 (row 1, column 0)
        mask[15, 15] = True  # bottom-right pixel of patch 4
        got = touched(student, mask, 8)
        expected = torch.tensor([False, False, True, True, True, False])
        assert same(got.bool(), expected), (
            f"the object touches patches 2 (one pixel), 3 (all of it) and 4 (one pixel): expected "
            f"{expected.int().tolist()}, got {got.int().tolist()}: "
            + hint_of(
                object_patches_mistake(mask, 8, got),
                "a patch counts as soon as it holds one pixel of the object, and the patches come in patchify's "
                "raster order",
            )
        )

    @pytest.mark.points(1)
    def test_raster_order_on_random_masks(self, student):
        """on random masks of non-square images, the patches come in patchify's order"""
        mask = torch.rand(2, 12, 20, generator=torch.Generator().manual_seed(61)) > 0.97
        got = touched(student, mask, 4)
        expected = reference_object_patches(mask, 4)
        assert same(got.bool(), expected), (
            "on two random 12 × 20 masks with 4 × 4 patches the patches are wrong: "
            + hint_of(
                object_patches_mistake(mask, 4, got),
                "split both axes into (grid, within-patch), reduce within each patch with any, and keep the "
                "grid row by row",
            )
        )

    @pytest.mark.points(1)
    def test_shapes_of_real_scenes(self, student):
        """on the captioning scenes, the patches of each shape equal the data set's object_patches"""
        task = make_caption_task(num_test=10, seed=3)
        scenes = task.test[:10]
        clean = render_scenes(scenes, noise=0.0)
        for sc, img in zip(scenes, clean):
            masks = torch.stack(
                [
                    (img - torch.tensor(COLOURS[colour])[:, None, None]).abs().amax(dim=0) < 1e-4
                    for colour, *_ in sc.objects
                ]
            )  # (2, 32, 32)
            got = touched(student, masks, 8)
            expected = task.object_patches(sc)
            assert same(got.bool(), expected), (
                f"for '{' '.join(sc.caption)}' the shapes touch patches "
                f"{[e.nonzero().flatten().tolist() for e in expected]}, got {patch_lists(got)}: "
                + hint_of(object_patches_mistake(masks, 8, got), "any pixel of the object, patchify's order")
            )


# -- task 4: attention mass on the object --------------------------------------------------------


def mass_and_chance(student, weights, targets) -> tuple[float, float]:
    got = student.attention_on_object(weights.clone(), targets.clone())
    pair = as_pair(got)
    assert pair is not None, f"attention_on_object should return two numbers, (mass, chance); got {describe(got)}"
    return pair


def random_attention(seed: int, batch: int, len_tgt: int, num_patches: int):
    """Random weights, and targets of 1 to 4 patches on about two rows in three (the others have none)."""
    g = torch.Generator().manual_seed(seed)
    weights = (3.0 * torch.randn(batch, len_tgt, num_patches, generator=g)).softmax(dim=-1)
    sizes = torch.randint(1, 5, (batch, len_tgt), generator=g)
    ranks = torch.rand(batch, len_tgt, num_patches, generator=g).argsort(dim=-1).argsort(dim=-1)
    targets = ranks < sizes[..., None]
    targets &= torch.rand(batch, len_tgt, 1, generator=g) < 0.67
    return weights, targets


@pytest.mark.task("attention_on_object")
class TestAttentionOnObject:
    @pytest.mark.points(1)
    def test_all_attention_on_the_object(self, student):
        """attention spread over the object's patches only has mass 1"""
        _, targets = random_attention(70, 3, 6, 16)
        weights = targets.float() / targets.float().sum(dim=-1, keepdim=True).clamp(min=1)
        weights[~targets.any(dim=-1)] = 1 / 16  # rows without a target: uniform
        mass, chance = mass_and_chance(student, weights, targets)
        hint = object_mistake(weights, targets, (mass, chance))
        assert abs(mass - 1.0) < 1e-6, (
            f"every row with a target puts all its attention on its targets, so the mass is 1; got {mass:.4g}"
            + (f": {hint}" if hint else "")
        )

    @pytest.mark.points(1)
    def test_matches_the_definition(self, student):
        """mass and chance on random attention, averaged over the rows that have a target"""
        weights, targets = random_attention(71, 4, 7, 12)
        expected = reference_attention_on_object(weights, targets)
        mass, chance = mass_and_chance(student, weights, targets)
        hint = object_mistake(weights, targets, (mass, chance))
        assert abs(mass - expected[0]) < 1e-6, f"the mass should be {expected[0]:.4g}, got {mass:.4g}: " + hint_of(
            hint, "sum each row's weights on its targets, then average over the rows that have a target"
        )
        assert abs(chance - expected[1]) < 1e-6, f"chance should be {expected[1]:.4g}, got {chance:.4g}: " + hint_of(
            hint, "the fraction of the patches that are targets, averaged over the rows with a target"
        )

    @pytest.mark.points(1)
    def test_rows_without_a_target_do_not_count(self, student):
        """adding rows that name no object (and, <eos>, padding) changes neither number"""
        weights, targets = random_attention(72, 3, 5, 9)
        targets[:, 0] |= torch.eye(9, dtype=torch.bool)[0]  # at least one row with a target per sentence
        extra_w = torch.rand(3, 4, 9, generator=torch.Generator().manual_seed(73)).softmax(dim=-1)
        more_w = torch.cat([weights, extra_w], dim=1)
        more_t = torch.cat([targets, torch.zeros(3, 4, 9, dtype=torch.bool)], dim=1)
        expected = reference_attention_on_object(weights, targets)
        mass, chance = mass_and_chance(student, more_w, more_t)
        hint = object_mistake(more_w, more_t, (mass, chance))
        assert abs(mass - expected[0]) < 1e-6 and abs(chance - expected[1]) < 1e-6, (
            f"4 rows without any target changed the result to ({mass:.4g}, {chance:.4g}) instead of "
            f"({expected[0]:.4g}, {expected[1]:.4g}): "
            + hint_of(hint, "average over the rows with a target only (targets.any(-1))")
        )

    @pytest.mark.points(1)
    def test_uniform_attention_scores_chance(self, student):
        """attention spread evenly over every patch scores exactly chance"""
        _, targets = random_attention(74, 2, 8, 16)
        weights = torch.full(targets.shape, 1 / 16)
        mass, chance = mass_and_chance(student, weights, targets)
        expected = reference_attention_on_object(weights, targets)
        hint = object_mistake(weights, targets, (mass, chance))
        assert abs(chance - expected[1]) < 1e-6 and abs(mass - chance) < 1e-6, (
            f"uniform attention should give mass = chance = {expected[1]:.4g}, got ({mass:.4g}, {chance:.4g}): "
            + hint_of(hint, "chance is the fraction of the patches that are targets (count / num_patches)")
        )


# -- task 5: a caption and its attention maps ----------------------------------------------------

IMAGES = torch.rand(4, 3, 8, 12, generator=torch.Generator().manual_seed(0))  # 2 × 3 patches of 4 × 4 pixels
PATCH, MAX_LEN, SEED, EOS_BIAS = 4, 10, 11, 0.0  # this model ends the captions after 5, 4, 10 and 5 tokens


def model_pair(student):
    local = tiny_captioning_model(SEED, eos_bias=EOS_BIAS)
    with substitute(student, "_hidden_test_factory", "course_lib.checks.ex09.tiny_captioning_model"):
        remote = student._hidden_test_factory(SEED, eos_bias=EOS_BIAS)
    remote.load_state_dict(local.state_dict())
    return local, remote


def run_caption_maps(student, remote):
    with (
        substitute(student, "to_patch_grid", "course_lib.checks.ex09.reference_patch_grid"),
        substitute(student, "upsample_patches", "course_lib.checks.ex09.reference_upsample"),
    ):
        result = student.caption_maps(remote, IMAGES.clone(), PATCH, MAX_LEN)
    assert isinstance(result, (tuple, list)) and len(result) == 2, (
        f"caption_maps should return two tensors, (tokens, maps); got {describe(result)}"
    )
    return as_tensor(result[0], "the tokens"), as_tensor(result[1], "the maps")


def caption_lengths(tokens: torch.Tensor) -> list[int]:
    """Tokens per caption, <eos> included (the whole row if there is none)."""
    return [row.index(EOS) + 1 if EOS in row else len(row) for row in tokens.tolist()]


@pytest.mark.task("caption_maps")
class TestCaptionMaps:
    @pytest.mark.points(1)
    def test_shapes(self, student):
        """tokens (batch, n) and maps (batch, n, H, W) for non-square images"""
        local, remote = model_pair(student)
        expected_tokens, _ = reference_caption_maps(local, IMAGES, PATCH, MAX_LEN)
        tokens, maps = run_caption_maps(student, remote)
        n = expected_tokens.shape[1]
        assert tuple(tokens.shape) == (4, n), (
            f"4 images captioned in {n} steps should give tokens (4, {n}), got {tuple(tokens.shape)}"
        )
        assert tuple(maps.shape) == (4, n, 8, 12), (
            f"4 images of 8 × 12 pixels captioned in {n} steps should give maps (4, {n}, 8, 12), got "
            f"{tuple(maps.shape)}: the grid has H // patch_size rows and W // patch_size columns, and the maps keep "
            "one row per token"
        )

    @pytest.mark.points(1)
    def test_tokens_are_the_greedy_caption(self, student):
        """the tokens are greedy_decode's caption of the image patches"""
        local, remote = model_pair(student)
        expected_tokens, _ = reference_caption_maps(local, IMAGES, PATCH, MAX_LEN)
        tokens, _ = run_caption_maps(student, remote)
        assert same(tokens, expected_tokens), (
            f"the captions should be {expected_tokens.tolist()}, got {tokens.tolist()}: caption "
            "patchify(images, patch_size) with greedy_decode(model, patches, None, max_len=max_len, need_weights=True)"
        )

    @pytest.mark.points(1)
    def test_maps_average_every_layer_and_head(self, student):
        """up to each caption's <eos>, a token's map is its cross-attention averaged over layers and heads"""
        local, remote = model_pair(student)
        expected_tokens, expected = reference_caption_maps(local, IMAGES, PATCH, MAX_LEN)
        tokens, maps = run_caption_maps(student, remote)
        assert maps.shape == expected.shape, (
            f"the maps should have shape {tuple(expected.shape)}, got {tuple(maps.shape)}"
        )
        for k, n in enumerate(caption_lengths(expected_tokens)):
            assert same(maps[k, :n], expected[k, :n]), f"the maps of caption {k} are wrong: " + hint_of(
                caption_maps_mistake(local, IMAGES, PATCH, MAX_LEN, tokens, maps),
                "stack the per-layer weights and average over the layers and the heads "
                "(torch.stack(weights).mean(dim=(0, 2))), then to_patch_grid and upsample_patches",
            )

    @pytest.mark.points(1)
    def test_maps_are_zero_after_eos(self, student):
        """the maps of the tokens after a caption's <eos> are zero; the <eos> keeps its map"""
        local, remote = model_pair(student)
        expected_tokens, _ = reference_caption_maps(local, IMAGES, PATCH, MAX_LEN)
        _, maps = run_caption_maps(student, remote)
        for k, n in enumerate(caption_lengths(expected_tokens)):
            assert bool((maps[k, n:] == 0).all()), (
                f"caption {k} ends with <eos> at token {n - 1}, but the maps after it are not zero: they belong to "
                "its padding, set them to zero"
            )
            assert bool((maps[k, n - 1] > 0).any()), (
                f"caption {k} ends with <eos> at token {n - 1}, and that token's map is zero: keep the map of the "
                "<eos> itself (what the decoder read to decide to stop); only the tokens after it are zero"
            )

    @pytest.mark.points(1)
    def test_each_map_holds_one_unit_of_attention(self, student):
        """one pixel per patch of each map adds up to 1, as the weights of one query do"""
        local, remote = model_pair(student)
        expected_tokens, _ = reference_caption_maps(local, IMAGES, PATCH, MAX_LEN)
        _, maps = run_caption_maps(student, remote)
        corners = maps[..., ::PATCH, ::PATCH].sum(dim=(-2, -1))  # (batch, n): one pixel of each patch
        for k, n in enumerate(caption_lengths(expected_tokens)):
            empty = (corners[k, :n].abs() < 1e-9).nonzero().flatten().tolist()
            assert not empty, (
                f"the maps of tokens {empty} of caption {k} are all zero, though they come before or at its <eos>: "
                "only the tokens after <eos> get an empty map"
            )
            assert bool(torch.allclose(corners[k, :n], torch.ones(n), atol=1e-5)), (
                f"the patches of caption {k}'s maps add up to {corners[k, :n].round(decimals=3).tolist()}, not 1: "
                "average the weights over the layers and the heads (a mean, not a sum), and keep each patch's "
                "weight as it is on its pixels"
            )


# -- task 6: point at the cell -------------------------------------------------------------------


def cells_of(student, maps: torch.Tensor) -> torch.Tensor:
    got = as_tensor(student.point_to_cell(maps.clone()), "point_to_cell's result")
    expected_shape = (*maps.shape[:-2], 2)
    assert tuple(got.shape) == expected_shape, (
        f"for maps of shape {tuple(maps.shape)} the cells should be {expected_shape}, (row, col) on the last axis; "
        f"got {tuple(got.shape)}" + (f": {cell_mistake(maps, got)}" if cell_mistake(maps, got) else "")
    )
    return got


def cells_explained(maps, got, default: str) -> str:
    return cell_mistake(maps, got) or default


def random_maps(seed: int, *shape: int) -> torch.Tensor:
    """Random non-negative maps, each a few bright blobs on a dim background, so that centres spread out."""
    g = torch.Generator().manual_seed(seed)
    maps = 0.01 * torch.rand(*shape, 32, 32, generator=g)
    flat = maps.reshape(-1, 32, 32)
    for k in range(flat.shape[0]):
        for _ in range(3):
            y, x = torch.randint(0, 29, (2,), generator=g).tolist()
            flat[k, y : y + 4, x : x + 4] += torch.rand((), generator=g)
    return maps


@pytest.mark.task("point_to_cell")
class TestPointToCell:
    @pytest.mark.points(1)
    def test_matches_the_definition(self, student):
        """on random maps with leading axes, the cell of each centre of mass"""
        maps = random_maps(61, 3, 4)
        got = cells_of(student, maps)
        expected = reference_point_to_cell(maps)
        assert torch.equal(got.long(), expected) and not got.is_floating_point(), (
            f"{int((got.long() != expected).any(-1).sum())} of 12 cells are wrong (or not integers): "
            + cells_explained(
                maps, got, "the centre of mass y = Σ m·i / Σ m, x = Σ m·j / Σ m; cell floor((y - 1) / 10)"
            )
        )

    @pytest.mark.points(1)
    def test_row_first(self, student):
        """a map in the top-right cell gives (0, 2), row first"""
        maps = point_maps([[(5, 25, 1.0)], [(25, 5, 2.0)]])
        got = cells_of(student, maps)
        assert got.tolist() == [[0, 2], [2, 0]], (
            f"a map at pixel (5, 25) is in cell (0, 2) and one at (25, 5) in (2, 0); got {got.tolist()}: "
            + cells_explained(maps, got, "return (row, col): the row from the vertical axis (dim -2)")
        )

    @pytest.mark.points(1)
    def test_centre_of_mass_not_brightest_pixel(self, student):
        """two blobs: the centre of mass lies between them, where no pixel is bright"""
        maps = point_maps(
            [[(4, 4, 3.0), (24, 24, 2.5)], [(3, 16, 1.0), (28, 16, 1.0)]]
        )  # centres (13.1, 13.1), (15.5, 16)
        got = cells_of(student, maps)
        expected = reference_point_to_cell(maps)
        assert torch.equal(got.long(), expected), (
            f"expected {expected.tolist()}, got {got.tolist()}: "
            + cells_explained(
                maps, got, "weigh every pixel: the centre of mass, sum(weight · coordinate) / sum(weight)"
            )
        )

    @pytest.mark.points(1)
    def test_the_border_and_the_cell_width(self, student):
        """centres near the cells' edges (10.5, 11.2, 20.8, 21.3) land in the right cells"""
        edges = [10.5, 11.2, 20.8, 21.3]
        pixels = [[(int(c), 16, 1 - (c % 1)), (int(c) + 1, 16, c % 1)] for c in edges]  # a centre at (c, 16)
        maps = point_maps(pixels)
        got = cells_of(student, maps)
        assert got[:, 0].tolist() == [0, 1, 1, 2], (
            f"rows at y = {edges} should be [0, 1, 1, 2] (cell = floor((y - 1) / 10)), got {got[:, 0].tolist()}: "
            + cells_explained(maps, got, "the grid starts at pixel 1 and its cells are 10 pixels wide")
        )

    @pytest.mark.points(1)
    def test_centres_in_the_border_are_clamped(self, student):
        """a centre in the 1-pixel border belongs to the nearest cell"""
        maps = point_maps([[(0, 0, 1.0)], [(31, 31, 1.0)], [(0, 31, 1.0)]])
        got = cells_of(student, maps)
        assert got.tolist() == [[0, 0], [2, 2], [0, 2]], (
            f"maps at pixels (0, 0), (31, 31) and (0, 31) should give [[0, 0], [2, 2], [0, 2]], got {got.tolist()}: "
            + cells_explained(maps, got, "clamp each cell index to 0..2")
        )

    @pytest.mark.points(1)
    def test_an_empty_map_has_no_cell(self, student):
        """a map that is zero everywhere gives (-1, -1); the others are unaffected"""
        maps = torch.stack([random_maps(62, 1)[0], torch.zeros(32, 32)])
        got = cells_of(student, maps)
        expected = reference_point_to_cell(maps)
        assert torch.equal(got.long(), expected) and not (got.is_floating_point() and bool(got.isnan().any())), (
            f"expected {expected.tolist()}, got {got.tolist()}: "
            + cells_explained(maps, got, "a map that is zero everywhere has no centre of mass: return (-1, -1)")
        )
