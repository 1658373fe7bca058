import pytest
import torch

from course_lib.data import (  # internal tables, to check against
    BOS,
    COLOURS,
    EOS,
    LEXICON,
    PAD,
    SHAPES,
    VERBS,
    Scene,
    Vocab,
    make_caption_task,
    make_translation_task,
    pairing,
    patchify,
    render_scenes,
    translate,
)


@pytest.fixture(scope="module")
def tr():
    return make_translation_task(2_000, 300, seed=1)


@pytest.fixture(scope="module")
def cap():
    return make_caption_task(200, seed=1)


# --- translation ------------------------------------------------------------------------
def test_translate_reorders_as_documented():
    pair = translate("the big red dog sees a cat in room four two nine".split())
    assert " ".join(pair.tgt) == "der hund rot gross ein katze im zimmer 9 2 4 sieht"
    #                  src index: the0 big1 red2 dog3 sees4 a5 cat6 in7 room8 four9 two10 nine11
    assert pair.alignment == (0, 3, 2, 1, 5, 6, 7, 8, 11, 10, 9, 4)


def test_alignment_is_a_permutation_that_translates_word_by_word(tr):
    for p in tr.train[:500] + tr.test:
        assert sorted(p.alignment) == list(range(len(p.src)))
        assert [LEXICON[p.src[i]] for i in p.alignment] == list(p.tgt)
        assert p.tgt[-1] in VERBS.values()  # verb-final
    assert any(p.alignment != tuple(range(len(p.src))) for p in tr.train)  # not the diagonal


def test_translation_task_is_deterministic_and_split_without_overlap(tr):
    again = make_translation_task(2_000, 300, seed=1)
    assert again.train == tr.train and again.test == tr.test
    assert make_translation_task(2_000, 300, seed=2).train != tr.train
    assert not {p.src for p in tr.train} & {p.src for p in tr.test}
    assert len({p.src for p in tr.train}) == len(tr.train)
    assert len({len(p.src) for p in tr.train}) > 4  # variable lengths


def test_translation_batch_pads_and_shifts(tr):
    pairs = tr.train[:5]
    b = tr.batch(pairs)
    lengths = torch.tensor([len(p.src) for p in pairs])
    assert b.src.shape == (5, int(lengths.max())) and b.src_mask.dtype == torch.bool
    assert torch.equal(b.src_mask.sum(1), lengths)
    assert (b.src[~b.src_mask] == PAD).all() and (b.src[b.src_mask] != PAD).all()
    assert (b.tgt_in[:, 0] == BOS).all()
    words = b.tgt_mask[:, :-1] & (b.tgt_out[:, :-1] != EOS)
    assert torch.equal(b.tgt_in[:, 1:][words], b.tgt_out[:, :-1][words])  # the input is the label, shifted
    assert torch.equal(b.tgt_out[torch.arange(5), b.tgt_mask.sum(1) - 1], torch.full((5,), EOS))
    assert tr.tgt_vocab.decode(b.tgt_out[0]) == list(pairs[0].tgt)
    align = tr.alignments(pairs)
    assert align.shape == b.tgt_out.shape
    assert torch.equal(align >= 0, b.tgt_mask & (b.tgt_out != EOS))


def test_translation_errors():
    with pytest.raises(ValueError, match="unknown words.*'dogs'"):
        translate("the dogs sees a cat".split())
    with pytest.raises(ValueError, match="exactly one verb"):
        translate("the dog a cat".split())
    with pytest.raises(ValueError, match="noun phrase"):
        translate("the big sees a cat".split())
    with pytest.raises(ValueError, match="in room digit"):
        translate("the dog sees a cat in room".split())
    with pytest.raises(ValueError, match="fewer than"):
        make_translation_task(900, 0, max_adjectives=0, max_digits=0)  # only 864 sentences exist
    with pytest.raises(ValueError, match="empty"):
        make_translation_task(10, 0).batch([])


def test_vocab_round_trip_and_errors():
    v = Vocab.build(["a", "b"])
    assert v.decode(v.encode(["b", "a"]) + [EOS, PAD]) == ["b", "a"]
    assert v.decode([BOS, 3, EOS], strip=False) == ["<bos>", "a", "<eos>"]
    with pytest.raises(ValueError, match="unknown words"):
        v.encode(["c"])
    with pytest.raises(ValueError, match="must start with"):
        Vocab(("a", "b", "c"))


# --- captioning -------------------------------------------------------------------------
def scene(*objects):
    return Scene(tuple(objects), noise_seed=0)


def test_caption_names_colours_shapes_and_positions():
    s = scene(("red", "square", 0, 0), ("blue", "circle", 2, 1))
    assert " ".join(s.caption) == "red square top left and blue circle bottom centre"
    assert len(s.referents) == len(s.caption) and s.referents[4] == -1  # "and" describes no shape
    assert [s.objects[r][0] for r in s.referents[:4]] == ["red"] * 4


def test_caption_task_is_deterministic_and_split_without_overlap(cap):
    assert len(cap.train) + len(cap.test) == 4 * 3 // 2 * 4 * 4 * 9 * 8  # every distinct scene once
    again = make_caption_task(200, seed=1)
    assert again.test == cap.test and again.train[:50] == cap.train[:50]
    assert not {s.objects for s in cap.train} & {s.objects for s in cap.test}
    assert len(cap.test) == 216  # 200 rounded up to whole pairings of 72 scenes
    order = list(COLOURS)
    assert all(order.index(s.objects[0][0]) < order.index(s.objects[1][0]) for s in cap.train)
    images = render_scenes(cap.test[:4])
    assert torch.equal(images, render_scenes(cap.test[:4]))  # a scene always renders the same...
    assert torch.equal(images[2], render_scenes(cap.test[2:3])[0])  # ...in any batch
    assert images.shape == (4, 3, 32, 32) and images.min() >= 0 and images.max() <= 1


@pytest.mark.parametrize("num_test", [1, 200, 1000])
def test_test_scenes_never_share_a_pair_of_shapes_with_training(num_test):
    task = make_caption_task(num_test, seed=0)
    train_pairs = {pairing(s.objects) for s in task.train}
    assert not train_pairs & {pairing(s.objects) for s in task.test}  # two shapes never seen together
    assert len(task.test) == -(-num_test // 72) * 72 and len(task.train) + len(task.test) == 6912
    # every single coloured shape in every cell is still seen in training
    assert {o for s in task.test for o in s.objects} <= {o for s in task.train for o in s.objects}
    # the fewest whole pairings that hold num_test scenes
    assert len({pairing(s.objects) for s in task.test}) == -(-num_test // 72)


def test_rendered_shapes_have_their_colour_in_their_cell():
    s = scene(("red", "square", 1, 2), ("blue", "circle", 2, 0))
    img = render_scenes([s], noise=0.0)[0]
    red_cell, blue_cell = img[:, 11:21, 21:31], img[:, 21:31, 1:11]  # cells are 10 px after a 1 px border
    assert red_cell[0].mean() > 0.5 and red_cell[2].mean() < 0.2
    assert blue_cell[2].mean() > 0.4 and blue_cell[0].mean() < 0.2
    assert int(torch.from_numpy(SHAPES["square"]).sum()) == int((red_cell[0] > 0.5).sum())
    rest = img.clone()
    rest[:, 11:21, 21:31] = rest[:, 21:31, 1:11] = 0.1
    assert torch.allclose(rest, torch.full_like(rest, 0.1))  # nothing drawn anywhere else


def test_patchify_layout():
    images = torch.randn(2, 3, 32, 16)
    p = patchify(images, 8)
    assert p.shape == (2, 4 * 2, 3 * 64)
    # patch 3 is grid row 1, column 1: pixels 8..15 in both directions
    torch.testing.assert_close(p[1, 3], images[1, :, 8:16, 8:16].reshape(-1))
    with pytest.raises(ValueError, match=r"32×16.*patch_size=5"):
        patchify(images, 5)
    with pytest.raises(ValueError, match="batch, channels"):
        patchify(torch.randn(3, 32, 32))


def test_caption_batch_and_patch_ground_truth(cap):
    scenes = cap.test[:6]
    b = cap.batch(scenes)
    assert b.src.shape == (6, 16, 192) and b.src_mask.all()
    assert cap.vocab.decode(b.tgt_out[3]) == list(scenes[3].caption)
    wp = cap.word_patches(scenes)
    assert wp.shape == (*b.tgt_out.shape, 16)
    for k, s in enumerate(scenes):
        obj = cap.object_patches(s)
        assert torch.equal(wp[k, :4], obj[0].expand(4, -1)) and torch.equal(wp[k, 5:9], obj[1].expand(4, -1))
        assert not wp[k, 4].any() and not wp[k, 9].any()  # "and", <eos>
        # a patch is marked exactly when it holds pixels of the object's colour
        for o, (colour, *_) in enumerate(s.objects):
            rgb = torch.tensor(COLOURS[colour])[:, None]
            coloured = ((b.src[k].reshape(16, 3, 64) - rgb).abs() < 0.25).all(dim=1).any(-1)
            assert torch.equal(coloured, obj[o])


def test_shapes_straddle_patches():
    task = make_caption_task(10, seed=0)
    s = scene(("red", "square", 0, 0), ("blue", "circle", 1, 1))  # pixels 2..9 and 12..19
    assert task.object_patches(s)[0].nonzero().flatten().tolist() == [0, 1, 4, 5]
    assert task.object_patches(s)[1].nonzero().flatten().tolist() == [5, 6, 9, 10]  # patch 5 is shared
    fine = make_caption_task(10, patch_size=16, seed=0)
    assert fine.object_patches(s)[0].nonzero().flatten().tolist() == [0]
    assert fine.batch([s]).src.shape == (1, 4, 768)
    with pytest.raises(ValueError, match="patch_size=5"):
        make_caption_task(patch_size=5)
    with pytest.raises(ValueError, match="num_test"):
        make_caption_task(num_test=10**6)
    with pytest.raises(ValueError, match="no pairing"):
        make_caption_task(num_test=6900)
