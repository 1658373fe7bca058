"""Deliberately wrong solutions of exercise 09, one per typical mistake.

``MUTANTS[name] = (task, code, caught_by)``: ``code`` replaces the solution region of the
cell whose ``grade_id`` is ``task`` in ``solutions/09_capstone_captioning.ipynb``;
graded, the mutant must fail at least one of the hidden tests named in ``caught_by``
(test function names), lose points, and keep every point of the other tasks.
``tests/grading/test_mutants.py`` runs them all.
"""

_MAPS_END = """
        finished = torch.cumsum((tokens == EOS).long(), dim=1) > 0
        after_eos = finished & (tokens != EOS)
        return tokens, maps.masked_fill(after_eos[..., None, None], 0.0)
"""

MUTANTS = {
    # -- task 1: patches back on the grid ---------------------------------------------------------
    "grid: column-major (patches laid out column by column)": (
        "to_patch_grid",
        """
        return weights.reshape(*weights.shape[:-1], grid_w, grid_h).transpose(-1, -2)
        """,
        ["test_patches_land_where_patchify_took_them"],
    ),
    "grid: (grid_w, grid_h) instead of (grid_h, grid_w)": (
        "to_patch_grid",
        """
        return weights.reshape(*weights.shape[:-1], grid_w, grid_h)
        """,
        ["test_shape_of_a_non_square_grid"],
    ),
    "grid: leading axes flattened": (
        "to_patch_grid",
        """
        return weights.reshape(-1, grid_h, grid_w)
        """,
        ["test_leading_axes_are_kept"],
    ),
    # -- task 2: patches to pixels ----------------------------------------------------------------
    "upsample: the grid tiled instead of each value repeated": (
        "upsample_patches",
        """
        return grid.repeat(*([1] * (grid.dim() - 2)), patch_size, patch_size)
        """,
        ["test_each_value_fills_its_own_block"],
    ),
    "upsample: only the rows": (
        "upsample_patches",
        """
        return grid.repeat_interleave(patch_size, dim=-2)
        """,
        ["test_shape"],
    ),
    "upsample: weights divided among the pixels": (
        "upsample_patches",
        """
        return grid.repeat_interleave(patch_size, dim=-2).repeat_interleave(patch_size, dim=-1) / patch_size**2
        """,
        ["test_each_value_fills_its_own_block"],
    ),
    "upsample: flattened and repeated (rows of one patch side by side)": (
        "upsample_patches",
        """
        *lead, h, w = grid.shape
        flat = grid.reshape(*lead, h * w).repeat_interleave(patch_size * patch_size, dim=-1)
        return flat.reshape(*lead, h * patch_size, w * patch_size)
        """,
        ["test_each_value_fills_its_own_block"],
    ),
    # -- task 3: which patches an object touches --------------------------------------------------
    "object: all pixels of the patch instead of any": (
        "object_patches",
        """
        *lead, h, w = pixel_mask.shape
        p = patch_size
        blocks = pixel_mask.reshape(*lead, h // p, p, w // p, p)
        return blocks.all(dim=-1).all(dim=-2).reshape(*lead, (h // p) * (w // p))
        """,
        ["test_one_pixel_is_enough"],
    ),
    "object: a majority of the patch's pixels": (
        "object_patches",
        """
        *lead, h, w = pixel_mask.shape
        p = patch_size
        blocks = pixel_mask.reshape(*lead, h // p, p, w // p, p).float()
        return (blocks.mean(dim=(-1, -3)) > 0.5).reshape(*lead, (h // p) * (w // p))
        """,
        ["test_one_pixel_is_enough"],
    ),
    "object: patches numbered column by column": (
        "object_patches",
        """
        *lead, h, w = pixel_mask.shape
        p = patch_size
        blocks = pixel_mask.reshape(*lead, h // p, p, w // p, p)
        touched = blocks.any(dim=-1).any(dim=-2)
        return touched.transpose(-1, -2).reshape(*lead, (h // p) * (w // p))
        """,
        ["test_raster_order_on_random_masks"],
    ),
    "object: a plain reshape to (num_patches, p * p)": (
        "object_patches",
        """
        *lead, h, w = pixel_mask.shape
        p = patch_size
        return pixel_mask.reshape(*lead, (h // p) * (w // p), p * p).any(dim=-1)
        """,
        ["test_raster_order_on_random_masks"],
    ),
    "object: the fraction of the patch covered, not a bool": (
        "object_patches",
        """
        *lead, h, w = pixel_mask.shape
        p = patch_size
        blocks = pixel_mask.reshape(*lead, h // p, p, w // p, p).float()
        return blocks.mean(dim=(-1, -3)).reshape(*lead, (h // p) * (w // p))
        """,
        ["test_shape_and_dtype"],
    ),
    # -- task 4: attention mass on the object -----------------------------------------------------
    "mass: every row counted": (
        "attention_on_object",
        """
        mass = (weights * targets).sum(dim=-1).mean()
        chance = targets.float().mean(dim=-1).mean()
        return float(mass), float(chance)
        """,
        ["test_rows_without_a_target_do_not_count"],
    ),
    "mass: the largest weight on the object instead of the sum": (
        "attention_on_object",
        """
        rows = targets.any(dim=-1)
        mass = (weights * targets).amax(dim=-1)[rows].mean()
        chance = targets.float().mean(dim=-1)[rows].mean()
        return float(mass), float(chance)
        """,
        ["test_all_attention_on_the_object"],
    ),
    "mass: a mean over the patches instead of a sum": (
        "attention_on_object",
        """
        rows = targets.any(dim=-1)
        mass = (weights * targets).mean(dim=-1)[rows].mean()
        chance = targets.float().mean(dim=-1)[rows].mean()
        return float(mass), float(chance)
        """,
        ["test_all_attention_on_the_object"],
    ),
    "mass: chance as a number of patches": (
        "attention_on_object",
        """
        rows = targets.any(dim=-1)
        mass = (weights * targets).sum(dim=-1)[rows].mean()
        chance = targets.float().sum(dim=-1)[rows].mean()
        return float(mass), float(chance)
        """,
        ["test_uniform_attention_scores_chance"],
    ),
    "mass: chance over every row": (
        "attention_on_object",
        """
        rows = targets.any(dim=-1)
        mass = (weights * targets).sum(dim=-1)[rows].mean()
        chance = targets.float().mean()
        return float(mass), float(chance)
        """,
        ["test_matches_the_definition"],
    ),
    "mass: (chance, mass) in the wrong order": (
        "attention_on_object",
        """
        rows = targets.any(dim=-1)
        mass = (weights * targets).sum(dim=-1)[rows].mean()
        chance = targets.float().mean(dim=-1)[rows].mean()
        return float(chance), float(mass)
        """,
        ["test_all_attention_on_the_object"],
    ),
    # -- task 5: a caption and its attention maps -------------------------------------------------
    "maps: the last layer only": (
        "caption_maps",
        """
        h, w = images.shape[-2:]
        patches = patchify(images, patch_size)
        tokens, weights = greedy_decode(model, patches, None, max_len=max_len, need_weights=True)
        mean = weights[-1].mean(dim=1)
        maps = upsample_patches(to_patch_grid(mean, h // patch_size, w // patch_size), patch_size)
        """
        + _MAPS_END,
        ["test_maps_average_every_layer_and_head"],
    ),
    "maps: summed over the heads": (
        "caption_maps",
        """
        h, w = images.shape[-2:]
        patches = patchify(images, patch_size)
        tokens, weights = greedy_decode(model, patches, None, max_len=max_len, need_weights=True)
        mean = torch.stack(weights).mean(dim=0).sum(dim=1)
        maps = upsample_patches(to_patch_grid(mean, h // patch_size, w // patch_size), patch_size)
        """
        + _MAPS_END,
        ["test_each_map_holds_one_unit_of_attention"],
    ),
    "maps: the grid's sides swapped": (
        "caption_maps",
        """
        h, w = images.shape[-2:]
        patches = patchify(images, patch_size)
        tokens, weights = greedy_decode(model, patches, None, max_len=max_len, need_weights=True)
        mean = torch.stack(weights).mean(dim=(0, 2))
        maps = upsample_patches(to_patch_grid(mean, w // patch_size, h // patch_size), patch_size)
        """
        + _MAPS_END,
        ["test_shapes"],
    ),
    "maps: not zeroed after <eos>": (
        "caption_maps",
        """
        h, w = images.shape[-2:]
        patches = patchify(images, patch_size)
        tokens, weights = greedy_decode(model, patches, None, max_len=max_len, need_weights=True)
        mean = torch.stack(weights).mean(dim=(0, 2))
        return tokens, upsample_patches(to_patch_grid(mean, h // patch_size, w // patch_size), patch_size)
        """,
        ["test_maps_are_zero_after_eos"],
    ),
    "maps: the <eos> map zeroed too": (
        "caption_maps",
        """
        h, w = images.shape[-2:]
        patches = patchify(images, patch_size)
        tokens, weights = greedy_decode(model, patches, None, max_len=max_len, need_weights=True)
        mean = torch.stack(weights).mean(dim=(0, 2))
        maps = upsample_patches(to_patch_grid(mean, h // patch_size, w // patch_size), patch_size)
        finished = torch.cumsum((tokens == EOS).long(), dim=1) > 0
        return tokens, maps.masked_fill(finished[..., None, None], 0.0)
        """,
        ["test_maps_are_zero_after_eos"],
    ),
    "maps: each word paired with the next step's weights": (
        "caption_maps",
        """
        h, w = images.shape[-2:]
        patches = patchify(images, patch_size)
        tokens, weights = greedy_decode(model, patches, None, max_len=max_len, need_weights=True)
        mean = torch.stack(weights).mean(dim=(0, 2)).roll(-1, dims=1)
        maps = upsample_patches(to_patch_grid(mean, h // patch_size, w // patch_size), patch_size)
        """
        + _MAPS_END,
        ["test_maps_average_every_layer_and_head"],
    ),
    "maps: patches of the default size": (
        "caption_maps",
        """
        h, w = images.shape[-2:]
        patches = patchify(images)
        tokens, weights = greedy_decode(model, patches, None, max_len=max_len, need_weights=True)
        mean = torch.stack(weights).mean(dim=(0, 2))
        maps = upsample_patches(to_patch_grid(mean, h // patch_size, w // patch_size), patch_size)
        """
        + _MAPS_END,
        ["test_tokens_are_the_greedy_caption"],
    ),
}

_CENTRE = """
        h, w = maps.shape[-2:]
        maps = maps.double()
        total = maps.sum(dim=(-2, -1))
        y = (maps.sum(dim=-1) * torch.arange(h, dtype=maps.dtype)).sum(dim=-1) / total
        x = (maps.sum(dim=-2) * torch.arange(w, dtype=maps.dtype)).sum(dim=-1) / total
"""
_EMPTY = """
        return cell.masked_fill((total == 0)[..., None], -1)
"""

MUTANTS |= {
    # -- task 6: point at the cell ----------------------------------------------------------------
    "cell: (col, row) instead of (row, col)": (
        "point_to_cell",
        _CENTRE + "        cell = ((torch.stack([x, y], dim=-1) - 1) / CELL).floor().clamp(0, 2).long()" + _EMPTY,
        ["test_row_first"],
        {"feedback": "the coordinates are swapped", "self_check": "the coordinates are swapped"},
    ),
    "cell: not divided by the map's total": (
        "point_to_cell",
        """
        h, w = maps.shape[-2:]
        maps = maps.double()
        total = maps.sum(dim=(-2, -1))
        y = (maps.sum(dim=-1) * torch.arange(h, dtype=maps.dtype)).sum(dim=-1)
        x = (maps.sum(dim=-2) * torch.arange(w, dtype=maps.dtype)).sum(dim=-1)
        cell = ((torch.stack([y, x], dim=-1) - 1) / CELL).floor().clamp(0, 2).long()
        """
        + _EMPTY,
        ["test_matches_the_definition"],
        {"feedback": "divide by the map's total", "self_check": "divide by the map's total"},
    ),
    "cell: the 1-pixel border forgotten": (
        "point_to_cell",
        _CENTRE + "        cell = (torch.stack([y, x], dim=-1) / CELL).floor().clamp(0, 2).long()" + _EMPTY,
        ["test_the_border_and_the_cell_width"],
        {"feedback": "1-pixel border", "self_check": "1-pixel border"},
    ),
    "cell: pixel centres at i + 0.5": (
        "point_to_cell",
        _CENTRE + "        cell = ((torch.stack([y, x], dim=-1) - 0.5) / CELL).floor().clamp(0, 2).long()" + _EMPTY,
        ["test_the_border_and_the_cell_width"],
        {"self_check": "pixel (i, j) sits at coordinate"},
    ),
    "cell: not clamped": (
        "point_to_cell",
        _CENTRE + "        cell = ((torch.stack([y, x], dim=-1) - 1) / CELL).floor().long()" + _EMPTY,
        ["test_centres_in_the_border_are_clamped"],
        {"feedback": "clamp the cell to 0..2", "self_check": "clamp the cell to 0..2"},
    ),
    "cell: rounded instead of floored": (
        "point_to_cell",
        _CENTRE + "        cell = ((torch.stack([y, x], dim=-1) - 1) / CELL).round().clamp(0, 2).long()" + _EMPTY,
        ["test_the_border_and_the_cell_width"],
        {"feedback": "round() moves", "self_check": "round() moves"},
    ),
    "cell: the brightest pixel": (
        "point_to_cell",
        """
        h, w = maps.shape[-2:]
        flat = maps.reshape(*maps.shape[:-2], h * w).argmax(dim=-1)
        yx = torch.stack([flat // w, flat % w], dim=-1).double()
        cell = ((yx - 1) / CELL).floor().clamp(0, 2).long()
        return cell.masked_fill((maps.sum(dim=(-2, -1)) == 0)[..., None], -1)
        """,
        ["test_centre_of_mass_not_brightest_pixel"],
        {"feedback": "the brightest pixel", "self_check": "the brightest pixel"},
    ),
    "cell: empty maps not handled (NaN)": (
        "point_to_cell",
        _CENTRE + "        return ((torch.stack([y, x], dim=-1) - 1) / CELL).floor().clamp(0, 2).long()\n",
        ["test_an_empty_map_has_no_cell"],
        {"feedback": "return (-1, -1)", "self_check": "a map that is zero everywhere"},
    ),
}
