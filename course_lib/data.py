"""Two synthetic tasks for the capstones, generated locally with fixed seeds.

* **Translation** (lesson 08): English-like sentences into a made-up "toy language"
  whose word order differs, so the alignment is not the diagonal:

  - adjectives follow the noun, in mirror order: ``the big red dog`` → ``der hund rot gross``;
  - the verb goes last (verb-final): ``S V O`` → ``S O V``;
  - numbers become digits, last digit first: ``in room four two`` → ``im zimmer 2 4``.

  Every target word comes from exactly one source word, so each pair carries its
  ground-truth alignment.
* **Captioning** (lesson 09): 32×32 RGB scenes with two coloured shapes in a 3×3
  grid and a caption that names them and their positions, e.g.
  ``red square top left and blue circle bottom right``. Each caption word that
  describes a shape carries the patches that shape covers.

Conventions shared by both tasks:

* every vocabulary starts with ``<pad>``, ``<bos>``, ``<eos>`` at ids ``PAD, BOS, EOS = 0, 1, 2``;
* a :class:`Batch` holds padded tensors and boolean masks, **True = real token**;
* an alignment of ``-1`` means "comes from no source position" (the ``<eos>`` token).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "Batch",
    "CaptionTask",
    "Pair",
    "Scene",
    "TranslationTask",
    "Vocab",
    "WORD_CLASSES",
    "make_caption_task",
    "make_translation_task",
    "pairing",
    "patchify",
    "render_scenes",
    "translate",
]

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<eos>")


@dataclass(frozen=True)
class Vocab:
    """A word ↔ id table whose first three entries are ``<pad>, <bos>, <eos>``."""

    words: tuple[str, ...]
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if tuple(self.words[:3]) != SPECIALS:
            raise ValueError(f"a Vocab must start with {SPECIALS}, got {tuple(self.words[:3])}")
        if len(set(self.words)) != len(self.words):
            raise ValueError("a Vocab's words must be unique")
        object.__setattr__(self, "index", {w: i for i, w in enumerate(self.words)})

    @classmethod
    def build(cls, words: Sequence[str]) -> Vocab:
        return cls(SPECIALS + tuple(words))

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, words: Sequence[str]) -> list[int]:
        unknown = [w for w in words if w not in self.index]
        if unknown:
            raise ValueError(f"unknown words {unknown}; the vocabulary is {list(self.words[3:])}")
        return [self.index[w] for w in words]

    def decode(self, ids: Sequence[int] | torch.Tensor, *, strip: bool = True) -> list[str]:
        """Ids → words. With ``strip``, stop at ``<eos>`` and drop ``<pad>``/``<bos>``."""
        out = []
        for i in ids.tolist() if isinstance(ids, torch.Tensor) else ids:
            if strip and i == EOS:
                break
            if strip and i in (PAD, BOS):
                continue
            out.append(self.words[i])
        return out


@dataclass
class Batch:
    """Padded tensors for one training or evaluation step.

    Attributes:
        src: ``(batch, len_src)`` token ids, or ``(batch, num_patches, patch_dim)`` floats.
        src_mask: ``(batch, len_src)`` bool, True = real token (all True for images).
        tgt_in: ``(batch, len_tgt)`` decoder input: ``<bos> y1 … yn`` then ``<pad>``.
        tgt_out: ``(batch, len_tgt)`` labels: ``y1 … yn <eos>`` then ``<pad>``.
        tgt_mask: ``(batch, len_tgt)`` bool, True where ``tgt_out`` is real (``<eos>`` included).
    """

    src: torch.Tensor
    src_mask: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    tgt_mask: torch.Tensor

    def __len__(self) -> int:
        return self.src.shape[0]


def _pad(seqs: Sequence[Sequence[int]], value: int = PAD) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad integer sequences: ``(batch, max_len)`` ids and their True = real mask."""
    lengths = [len(s) for s in seqs]
    ids = torch.full((len(seqs), max(lengths, default=0)), value, dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    mask = torch.arange(ids.shape[1])[None, :] < torch.as_tensor(lengths)[:, None]
    return ids, mask


def _targets(seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``tgt_in`` = ``<bos> y``, ``tgt_out`` = ``y <eos>``, and the mask of ``tgt_out``."""
    tgt_in, _ = _pad([[BOS, *s] for s in seqs])
    tgt_out, tgt_mask = _pad([[*s, EOS] for s in seqs])
    return tgt_in, tgt_out, tgt_mask


# --------------------------------------------------------------------------------------
# Translation
# --------------------------------------------------------------------------------------
DETERMINERS = {"the": "der", "a": "ein"}
ADJECTIVES = {
    "big": "gross",
    "small": "klein",
    "red": "rot",
    "blue": "blau",
    "old": "alt",
    "young": "jung",
    "happy": "froh",
    "green": "gruen",
}
NOUNS = {"dog": "hund", "cat": "katze", "bird": "vogel", "fish": "fisch", "horse": "pferd", "mouse": "maus"}
VERBS = {"sees": "sieht", "likes": "mag", "chases": "jagt", "finds": "findet", "hears": "hoert", "follows": "folgt"}
PREPOSITION = {"in": "im", "room": "zimmer"}
DIGITS = {w: str(d) for d, w in enumerate("zero one two three four five six seven eight nine".split())}
LEXICON = {**DETERMINERS, **ADJECTIVES, **NOUNS, **VERBS, **PREPOSITION, **DIGITS}
WORD_CLASSES = {  # every source and target word → its class, e.g. "hund" → "noun"
    word: name
    for table, name in [
        (DETERMINERS, "determiner"),
        (ADJECTIVES, "adjective"),
        (NOUNS, "noun"),
        (VERBS, "verb"),
        (PREPOSITION, "preposition"),
        (DIGITS, "digit"),
    ]
    for pair in table.items()
    for word in pair
}


@dataclass(frozen=True)
class Pair:
    """One sentence pair and its ground-truth alignment.

    Attributes:
        src, tgt: the words (no special tokens).
        alignment: ``alignment[j]`` is the index in ``src`` of the word that ``tgt[j]``
            translates; ``len(alignment) == len(tgt)``.
    """

    src: tuple[str, ...]
    tgt: tuple[str, ...]
    alignment: tuple[int, ...]


def _split_clause(src: Sequence[str]) -> tuple[list[int], int, list[int], list[int]]:
    """Source positions of subject NP, verb, object NP and the optional ``in room …`` phrase."""
    words = list(src)
    verbs = [i for i, w in enumerate(words) if w in VERBS]
    if len(verbs) != 1:
        raise ValueError(f"a sentence has exactly one verb, got {len(verbs)}: {' '.join(words)}")
    verb = verbs[0]
    start = words.index("in", verb) if "in" in words[verb:] else len(words)
    return list(range(verb)), verb, list(range(verb + 1, start)), list(range(start, len(words)))


def _np_order(positions: list[int]) -> list[int]:
    """``det adj1 adj2 noun`` → ``det noun adj2 adj1``: adjectives follow the noun, mirrored."""
    det, *adjs, noun = positions
    return [det, noun, *reversed(adjs)]


def _check_np(words: Sequence[str], positions: list[int]) -> None:
    ws = [words[i] for i in positions]
    ok = len(ws) >= 2 and ws[0] in DETERMINERS and ws[-1] in NOUNS and all(w in ADJECTIVES for w in ws[1:-1])
    if not ok:
        raise ValueError(f"not a noun phrase 'det adj* noun': {' '.join(ws)}")


def translate(src: Sequence[str]) -> Pair:
    """Translate an English-like sentence into the toy language, with its alignment.

    The grammar is ``det adj* noun verb det adj* noun [in room digit+]``. The target
    puts the verb last, adjectives after their noun in mirror order, and the digits in
    reverse order. ``translate`` is the ground truth the model must learn.

    Raises:
        ValueError: when ``src`` is not a sentence of the grammar; the message says why.
    """
    words = list(src)
    unknown = [w for w in words if w not in LEXICON]
    if unknown:
        raise ValueError(f"unknown words {unknown}; the vocabulary is {sorted(LEXICON)}")
    subj, verb, obj, phrase = _split_clause(words)
    _check_np(words, subj)
    _check_np(words, obj)
    order = _np_order(subj) + _np_order(obj)
    if phrase:
        if (
            len(phrase) < 3
            or [words[i] for i in phrase[:2]] != ["in", "room"]
            or any(words[i] not in DIGITS for i in phrase[2:])
        ):
            raise ValueError(
                f"the phrase after the object must be 'in room digit+', got {' '.join(words[phrase[0] :])}"
            )
        order += phrase[:2] + phrase[:1:-1]  # "in room a b c" → "im zimmer c b a"
    order.append(verb)  # verb-final
    return Pair(tuple(words), tuple(LEXICON[words[i]] for i in order), tuple(order))


def _random_np(rng: random.Random, max_adjectives: int) -> list[str]:
    adjs = rng.sample(list(ADJECTIVES), rng.randint(0, max_adjectives))
    return [rng.choice(list(DETERMINERS)), *adjs, rng.choice(list(NOUNS))]


def _random_sentence(rng: random.Random, max_adjectives: int, max_digits: int) -> tuple[str, ...]:
    words = _random_np(rng, max_adjectives) + [rng.choice(list(VERBS))] + _random_np(rng, max_adjectives)
    if max_digits and rng.random() < 0.5:
        words += ["in", "room"] + [rng.choice(list(DIGITS)) for _ in range(rng.randint(1, max_digits))]
    return tuple(words)


@dataclass
class TranslationTask:
    """Sentence pairs split into disjoint train and test sets, with their vocabularies."""

    src_vocab: Vocab
    tgt_vocab: Vocab
    train: list[Pair]
    test: list[Pair]

    def batch(self, pairs: Sequence[Pair]) -> Batch:
        """Pad a list of pairs into a :class:`Batch` (source ids, no special tokens)."""
        if not pairs:
            raise ValueError("cannot make a batch from an empty list of pairs")
        src, src_mask = _pad([self.src_vocab.encode(p.src) for p in pairs])
        tgt_in, tgt_out, tgt_mask = _targets([self.tgt_vocab.encode(p.tgt) for p in pairs])
        return Batch(src, src_mask, tgt_in, tgt_out, tgt_mask)

    def alignments(self, pairs: Sequence[Pair]) -> torch.Tensor:
        """``(batch, len_tgt)`` source index of each label in ``batch(pairs).tgt_out``; -1 at ``<eos>``/pad."""
        out = torch.full((len(pairs), max(len(p.tgt) for p in pairs) + 1), -1, dtype=torch.long)
        for row, p in enumerate(pairs):
            out[row, : len(p.alignment)] = torch.as_tensor(p.alignment)
        return out


def make_translation_task(
    num_train: int = 20_000, num_test: int = 1_000, *, max_adjectives: int = 2, max_digits: int = 3, seed: int = 0
) -> TranslationTask:
    """Generate distinct random sentences and split them: no test sentence is in train.

    Args:
        num_train, num_test: sizes of the two splits.
        max_adjectives: adjectives per noun phrase, 0 to this many.
        max_digits: digits in the optional ``in room …`` phrase (0 disables it).
        seed: the generator's seed; the same seed gives the same task.
    """
    if num_train < 1 or num_test < 0:
        raise ValueError(f"need num_train >= 1 and num_test >= 0, got {num_train} and {num_test}")
    if not 0 <= max_adjectives <= len(ADJECTIVES) or max_digits < 0:
        raise ValueError(f"need 0 <= max_adjectives <= {len(ADJECTIVES)} and max_digits >= 0")
    rng = random.Random(seed)
    seen: dict[tuple[str, ...], None] = {}  # insertion-ordered set: deterministic order
    for _ in range(50 * (num_train + num_test)):
        if len(seen) == num_train + num_test:
            break
        seen.setdefault(_random_sentence(rng, max_adjectives, max_digits))
    else:
        raise ValueError(f"the grammar has fewer than {num_train + num_test} distinct sentences with these settings")
    sentences = list(seen)
    rng.shuffle(sentences)
    pairs = [translate(s) for s in sentences]
    src_words = sorted(LEXICON)
    tgt_words = sorted(set(LEXICON.values()))
    return TranslationTask(Vocab.build(src_words), Vocab.build(tgt_words), pairs[:num_train], pairs[num_train:])


# --------------------------------------------------------------------------------------
# Captioning
# --------------------------------------------------------------------------------------
COLOURS = {  # caption order: a scene names its colours in this order, so its caption is unique
    "red": (0.9, 0.15, 0.15),
    "green": (0.15, 0.8, 0.2),
    "blue": (0.2, 0.35, 0.95),
    "yellow": (0.95, 0.85, 0.1),
}
ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "centre", "right")
SIZE = 32  # image side in pixels
CELL = 10  # the 3 × 3 grid's cells are 10 pixels wide, after a 1-pixel border: 1 + 3·10 + 1 = 32
PATCH = 8  # default patch side: a 4 × 4 grid of patches that does NOT line up with the cells
BACKGROUND = 0.1  # dark grey


def _shape_masks() -> dict[str, np.ndarray]:
    """``CELL × CELL`` boolean stencils of the four shapes, with a one-pixel margin."""
    y, x = np.mgrid[0:CELL, 0:CELL] + 0.5
    c = CELL / 2
    inner = (x > 1) & (x < CELL - 1) & (y > 1) & (y < CELL - 1)
    return {
        "square": inner,
        "circle": (x - c) ** 2 + (y - c) ** 2 <= 4.0**2,
        "triangle": inner & (np.abs(x - c) <= (y - 1) / 2),
        "cross": inner & ((np.abs(x - c) < 1.1) | (np.abs(y - c) < 1.1)),
    }


SHAPES = _shape_masks()


def _cell_origin(row: int, col: int) -> tuple[int, int]:
    return 1 + row * CELL, 1 + col * CELL


@dataclass(frozen=True)
class Scene:
    """Two shapes in two cells of a 3 × 3 grid; ``objects[0]`` is the one named first.

    Attributes:
        objects: ``((colour, shape, row, col), (colour, shape, row, col))``, rows and
            columns in ``0..2``; the colours differ and follow the order of ``COLOURS``.
        noise_seed: seeds the image's pixel noise, so a scene always renders the same.
    """

    objects: tuple[tuple[str, str, int, int], tuple[str, str, int, int]]
    noise_seed: int

    @property
    def caption(self) -> tuple[str, ...]:
        """``colour shape row column and colour shape row column``,
        e.g. ``red square top left and blue circle bottom right``."""
        (c1, s1, r1, k1), (c2, s2, r2, k2) = self.objects
        return (c1, s1, ROWS[r1], COLUMNS[k1], "and", c2, s2, ROWS[r2], COLUMNS[k2])

    @property
    def referents(self) -> tuple[int, ...]:
        """For each caption word, the object it describes (0 or 1), or -1 for ``and``."""
        return (0, 0, 0, 0, -1, 1, 1, 1, 1)


@functools.cache
def _deltas() -> torch.Tensor:
    """``(colours, shapes, cells, 3, SIZE, SIZE)``: what each coloured shape adds to the background.

    Shapes sit in distinct cells and never overlap, so an image is the background plus
    one precomputed delta per object: rendering a batch is two gathers and a sum.
    """
    out = torch.zeros(len(COLOURS), len(SHAPES), 9, 3, SIZE, SIZE)
    for i, rgb in enumerate(COLOURS.values()):
        for j, stencil in enumerate(SHAPES.values()):
            for cell in range(9):
                y, x = _cell_origin(*divmod(cell, 3))
                block = out[i, j, cell, :, y : y + CELL, x : x + CELL]
                block[:, torch.from_numpy(stencil)] = (torch.tensor(rgb) - BACKGROUND)[:, None]
    return out


def render_scenes(scenes: Sequence[Scene], *, noise: float = 0.05) -> torch.Tensor:
    """The scenes as ``(batch, 3, 32, 32)`` float32 images in ``[0, 1]`` (channels first).

    Each scene's pixel noise is drawn from its own ``noise_seed``, so a scene renders
    the same every time, in any batch.
    """
    colours, shapes = list(COLOURS), list(SHAPES)
    idx = torch.tensor(
        [[(colours.index(c), shapes.index(s), r * 3 + k) for c, s, r, k in sc.objects] for sc in scenes]
    ).reshape(len(scenes), 2, 3)
    deltas = _deltas()
    images = BACKGROUND + deltas[idx[:, 0, 0], idx[:, 0, 1], idx[:, 0, 2]]
    images += deltas[idx[:, 1, 0], idx[:, 1, 1], idx[:, 1, 2]]
    if noise:
        gen = torch.Generator()
        for image, scene in zip(images, scenes):
            gen.manual_seed(scene.noise_seed)
            image += noise * torch.randn(image.shape, generator=gen)
    return images.clamp_(0.0, 1.0)


def patchify(images: torch.Tensor | np.ndarray, patch_size: int = PATCH) -> torch.Tensor:
    """Cut images into square patches, in raster order (row by row).

    Args:
        images: ``(batch, channels, height, width)``; height and width divisible by ``patch_size``.

    Returns:
        ``(batch, num_patches, channels * patch_size**2)`` with
        ``num_patches = (height // patch_size) * (width // patch_size)``; patch ``i`` sits
        at grid row ``i // (width // patch_size)`` and column ``i % (width // patch_size)``.
    """
    x = torch.as_tensor(images)
    if x.dim() != 4:
        raise ValueError(f"patchify expects (batch, channels, height, width), got {tuple(x.shape)}")
    b, c, h, w = x.shape
    if patch_size < 1 or h % patch_size or w % patch_size:
        raise ValueError(f"image size {h}×{w} of {tuple(x.shape)} is not divisible by patch_size={patch_size}")
    p = patch_size
    x = x.reshape(b, c, h // p, p, w // p, p)  # split both spatial axes into (grid, within-patch)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (batch, grid_h, grid_w, channels, p, p)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


@dataclass
class CaptionTask:
    """Scenes split into disjoint train and test sets, and the caption vocabulary."""

    vocab: Vocab
    train: list[Scene]
    test: list[Scene]
    patch_size: int = PATCH
    noise: float = 0.05

    @property
    def num_patches(self) -> int:
        return (SIZE // self.patch_size) ** 2

    @property
    def patch_dim(self) -> int:
        return 3 * self.patch_size**2

    def images(self, scenes: Sequence[Scene]) -> torch.Tensor:
        """``(batch, 3, 32, 32)`` images of the scenes."""
        return render_scenes(scenes, noise=self.noise)

    def batch(self, scenes: Sequence[Scene]) -> Batch:
        """A :class:`Batch` whose source is the patches, ``(batch, num_patches, patch_dim)``."""
        if not scenes:
            raise ValueError("cannot make a batch from an empty list of scenes")
        src = patchify(self.images(scenes), self.patch_size)
        src_mask = torch.ones(src.shape[:2], dtype=torch.bool)
        tgt_in, tgt_out, tgt_mask = _targets([self.vocab.encode(s.caption) for s in scenes])
        return Batch(src, src_mask, tgt_in, tgt_out, tgt_mask)

    def object_patches(self, scene: Scene) -> torch.Tensor:
        """``(2, num_patches)`` bool: the patches that each object's pixels touch.

        Cells and patches do not line up, so a shape usually spans 2 to 4 patches, and
        two shapes in neighbouring cells can share a patch.
        """
        grid = SIZE // self.patch_size
        out = torch.zeros(2, self.num_patches, dtype=torch.bool)
        for k, (_, shape, row, col) in enumerate(scene.objects):
            ys, xs = np.nonzero(SHAPES[shape])
            y0, x0 = _cell_origin(row, col)
            patch = (y0 + ys) // self.patch_size * grid + (x0 + xs) // self.patch_size
            out[k, np.unique(patch)] = True
        return out

    def word_patches(self, scenes: Sequence[Scene]) -> torch.Tensor:
        """``(batch, len_tgt, num_patches)`` bool: for each label in ``batch(scenes).tgt_out``,
        the patches of the object it describes (all False for ``and``, ``<eos>`` and pad)."""
        len_tgt = max(len(s.caption) for s in scenes) + 1
        out = torch.zeros(len(scenes), len_tgt, self.num_patches, dtype=torch.bool)
        for row, s in enumerate(scenes):
            patches = self.object_patches(s)
            for j, ref in enumerate(s.referents):
                if ref >= 0:
                    out[row, j] = patches[ref]
        return out


def _all_scenes() -> list[tuple[tuple[str, str, int, int], tuple[str, str, int, int]]]:
    """Every scene: two different colours (named in ``COLOURS`` order), any shapes, two distinct cells."""
    colours, shapes = list(COLOURS), list(SHAPES)
    cells = [(r, c) for r in range(3) for c in range(3)]
    out = []
    for i, c1 in enumerate(colours):
        for c2 in colours[i + 1 :]:
            for s1 in shapes:
                for s2 in shapes:
                    for p1 in cells:
                        for p2 in cells:
                            if p1 != p2:
                                out.append(((c1, s1, *p1), (c2, s2, *p2)))
    return out


def pairing(objects: tuple[tuple[str, str, int, int], tuple[str, str, int, int]]) -> tuple[tuple[str, str], ...]:
    """The two coloured shapes of a scene, positions aside: ``(("red", "square"), ("blue", "circle"))``."""
    return tuple((colour, shape) for colour, shape, *_ in objects)


def make_caption_task(
    num_test: int = 1_000, *, patch_size: int = PATCH, noise: float = 0.05, seed: int = 0
) -> CaptionTask:
    """All 6 912 distinct scenes, split by their pair of coloured shapes.

    A scene's *pairing* is its two coloured shapes, positions aside (``red square`` with ``blue circle``): 96
    pairings, each in 72 layouts. Whole pairings are held out for testing, so no test scene shows two coloured
    shapes that any training scene shows together; every single coloured shape, in every cell, is still seen in
    training, with other partners.

    Args:
        num_test: at least this many scenes are held out: the fewest whole pairings that hold as many
            (``len(test)`` is ``num_test`` rounded up to a multiple of 72); the rest are for training.
        patch_size: side of the square patches the model sees (a divisor of 32).
        noise: standard deviation of the Gaussian pixel noise.
        seed: seeds the shuffle and every scene's noise.
    """
    if patch_size < 1 or SIZE % patch_size:
        raise ValueError(f"patch_size={patch_size} must divide the image size {SIZE}")
    layouts = _all_scenes()
    if not 0 <= num_test < len(layouts):
        raise ValueError(f"num_test must lie in [0, {len(layouts)}), got {num_test}")
    rng = random.Random(seed)
    rng.shuffle(layouts)
    scenes = [Scene(objects, noise_seed=seed * 1_000_003 + i) for i, objects in enumerate(layouts)]
    pairings = sorted({pairing(objects) for objects in layouts})
    rng.shuffle(pairings)
    per_pairing = len(layouts) // len(pairings)
    held_out = set(pairings[: -(-num_test // per_pairing)])  # ceil(num_test / 72) whole pairings
    if len(held_out) == len(pairings):
        raise ValueError(f"num_test={num_test} leaves no pairing of coloured shapes for training")
    words = [*COLOURS, *SHAPES, *ROWS, *COLUMNS, "and"]
    train = [sc for sc in scenes if pairing(sc.objects) not in held_out]
    test = [sc for sc in scenes if pairing(sc.objects) in held_out]
    return CaptionTask(Vocab.build(words), train, test, patch_size, noise)
