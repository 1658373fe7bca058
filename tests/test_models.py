import pytest
import torch
from reference import tol

from course_lib.data import EOS, PAD, make_caption_task, make_translation_task
from course_lib.models import (
    alignment_accuracy,
    attention_on_targets,
    captioning_model,
    evaluate,
    greedy_decode,
    sinusoidal_positions,
    train,
    translation_model,
)


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny matrices: a second thread costs more in synchronisation than it saves,
    # and far more when the machine is shared.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tr():
    return make_translation_task(400, 40, seed=0)


@pytest.fixture(scope="module")
def cap():
    return make_caption_task(40, seed=0)


def small_translation_model(tr, seed=0, layers=2):
    return translation_model(
        len(tr.src_vocab), len(tr.tgt_vocab), d_model=32, num_heads=4, num_layers=layers, d_ff=64, seed=seed
    )


def test_forward_shapes_and_weights(tr):
    model = small_translation_model(tr, layers=3)
    b = tr.batch(tr.train[:5])
    logits, weights = model(b.src, b.src_mask, b.tgt_in, need_weights=True)
    assert logits.shape == (5, b.tgt_in.shape[1], len(tr.tgt_vocab))
    assert len(weights) == 3
    for w in weights:
        assert w.shape == (5, 4, b.tgt_in.shape[1], b.src.shape[1])  # (batch, heads, len_tgt, len_src)
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
        assert (w.masked_fill(b.src_mask[:, None, None, :], 0) == 0).all()  # no weight on source padding
    assert torch.equal(model(b.src, b.src_mask, b.tgt_in), logits)


def test_model_seed_gives_the_same_weights_and_keeps_the_global_rng(tr):
    state = torch.random.get_rng_state()
    a, b = small_translation_model(tr, seed=3), small_translation_model(tr, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(next(small_translation_model(tr, seed=4).parameters()), next(a.parameters()))


def test_padded_sources_give_the_same_outputs(tr):
    model = small_translation_model(tr)
    pairs = tr.train[:6]
    batch = tr.batch(pairs)
    logits = model(batch.src, batch.src_mask, batch.tgt_in)
    for k, p in enumerate(pairs):  # each sentence alone, unpadded
        alone = tr.batch([p])
        ref = model(alone.src, alone.src_mask, alone.tgt_in)
        n = alone.tgt_in.shape[1]
        torch.testing.assert_close(logits[k : k + 1, :n], ref, **tol(torch.float32))
    # Extra padding columns, holding arbitrary tokens, change nothing either.
    src = torch.cat([batch.src, torch.randint(3, len(tr.src_vocab), (6, 4))], dim=1)
    mask = torch.cat([batch.src_mask, torch.zeros(6, 4, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(model(src, mask, batch.tgt_in), logits, **tol(torch.float32))
    out = greedy_decode(model, batch.src, batch.src_mask)
    assert torch.equal(greedy_decode(model, src, mask), out)


def test_without_the_source_mask_padding_leaks(tr):
    model = small_translation_model(tr)
    batch = tr.batch(tr.train[:6])
    assert not batch.src_mask.all()
    assert not torch.allclose(model(batch.src, None, batch.tgt_in), model(batch.src, batch.src_mask, batch.tgt_in))


def test_decoder_is_causal(tr):
    model = small_translation_model(tr)
    b = tr.batch(tr.train[:3])
    changed = b.tgt_in.clone()
    changed[:, 4:] = torch.randint(3, len(tr.tgt_vocab), changed[:, 4:].shape)
    a, c = model(b.src, b.src_mask, b.tgt_in), model(b.src, b.src_mask, changed)
    torch.testing.assert_close(a[:, :4], c[:, :4], **tol(torch.float32))
    assert not torch.allclose(a[:, 4:], c[:, 4:])


@pytest.mark.parametrize("task_name", ["translation", "captioning"])
def test_cached_decoding_equals_uncached(task_name, tr, cap):
    if task_name == "translation":
        model, batch = small_translation_model(tr, layers=3), tr.batch(tr.test[:8])
    else:
        model = captioning_model(cap.patch_dim, cap.num_patches, len(cap.vocab), d_model=32, num_layers=2, d_ff=64)
        batch = cap.batch(cap.test[:8])
    out, w = greedy_decode(model, batch.src, batch.src_mask, max_len=12, need_weights=True)
    ref, w_ref = greedy_decode(model, batch.src, batch.src_mask, max_len=12, use_cache=False, need_weights=True)
    assert torch.equal(out, ref)
    assert len(w) == len(w_ref) == len(model.decoder.layers)
    for a, b in zip(w, w_ref):
        assert a.shape == (8, 4, out.shape[1], batch.src.shape[1])
        torch.testing.assert_close(a, b, **tol(torch.float32))
    # the cached logits are the teacher-forced ones on the generated prefix
    logits = model(batch.src, batch.src_mask, torch.cat([torch.full((8, 1), 1), out[:, :-1]], dim=1))
    assert torch.equal(logits.argmax(-1)[out != PAD], out[out != PAD])


def test_greedy_decode_stops_and_pads():
    torch.manual_seed(0)
    tr = make_translation_task(50, 0)
    model = small_translation_model(tr)
    with torch.no_grad():  # make the model always say <eos> after one word
        model.decoder.out.bias.zero_()
        model.decoder.out.bias[EOS] = 50.0
    b = tr.batch(tr.train[:4])
    out = greedy_decode(model, b.src, b.src_mask, max_len=10)
    assert out.shape == (4, 1) and (out == EOS).all()


def test_a_model_overfits_a_few_batches():
    few = make_translation_task(16, 0, seed=5)  # two batches of 8
    model = small_translation_model(few, layers=1)
    losses = train(model, few, 100, batch_size=8, lr=1e-2, warmup=10, progress=False)
    assert losses[-1] < 0.05 < 1.0 < losses[0]
    assert evaluate(model, few, few.train)["exact_match"] == 1.0


def test_captioning_model_overfits_a_batch():
    few = make_caption_task(0, seed=2)
    few.train = few.train[:8]
    model = captioning_model(few.patch_dim, few.num_patches, len(few.vocab), d_model=32, num_layers=1, d_ff=64)
    losses = train(model, few, 100, batch_size=8, lr=1e-2, warmup=10, progress=False)
    assert losses[-1] < 0.05 < 1.0 < losses[0]
    assert evaluate(model, few, few.train)["exact_match"] == 1.0


def test_training_is_deterministic(tr):
    runs = [train(small_translation_model(tr, seed=1), tr, 8, batch_size=16, seed=2, progress=False) for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == 8
    other = train(small_translation_model(tr, seed=1), tr, 8, batch_size=16, seed=3, progress=False)
    assert other != runs[0]


def test_evaluate_counts_tokens_and_sentences(tr, monkeypatch):
    import course_lib.models as models

    pairs = tr.test[:4]
    b = tr.batch(pairs)
    truth = b.tgt_out.clone()
    truth[0, 0] = 3 if truth[0, 0] != 3 else 4  # one wrong token in sentence 0
    monkeypatch.setattr(models, "greedy_decode", lambda *args, **kwargs: truth)
    r = evaluate(None, tr, pairs)
    assert r["exact_match"] == 0.75
    assert r["token_accuracy"] == pytest.approx(1 - 1 / int(b.tgt_mask.sum()))


def test_alignment_and_mass_metrics():
    alignment = torch.tensor([[2, 0, 1, -1]])
    weights = torch.nn.functional.one_hot(torch.tensor([[2, 0, 0, 1]]), 3).float()
    assert alignment_accuracy(weights, alignment) == pytest.approx(2 / 3)  # the -1 is not counted
    targets = torch.zeros(1, 4, 3, dtype=torch.bool)
    targets[0, 0, 2] = targets[0, 1, 1] = True
    w = torch.tensor([[[0.1, 0.1, 0.8], [0.5, 0.3, 0.2], [1.0, 0, 0], [1.0, 0, 0]]])
    assert attention_on_targets(w, targets) == pytest.approx((0.8 + 0.3) / 2)


def test_errors(tr):
    model = small_translation_model(tr)
    b = tr.batch(tr.train[:2])
    with pytest.raises(ValueError, match=r"src_mask must be bool.*\(2, \d+\).*float32"):
        model(b.src, b.src_mask.float(), b.tgt_in)
    with pytest.raises(ValueError, match="different batch sizes"):
        model(b.src, b.src_mask, b.tgt_in[:1])
    with pytest.raises(ValueError, match="longer than max_len=32"):
        model(torch.ones(1, 40, dtype=torch.long), None, b.tgt_in[:1])
    with pytest.raises(ValueError, match="len_tgt <= 32"):
        model(b.src, b.src_mask, torch.ones(2, 40, dtype=torch.long))
    with pytest.raises(ValueError, match="even d_model"):
        sinusoidal_positions(4, 7)
    with pytest.raises(ValueError, match="steps and batch_size"):
        train(model, tr, 0)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        train(model, tr, 1, batch_size=10_000)
    with pytest.raises(ValueError, match=r"\(1, 4, 3\).*\(1, 3\)"):
        alignment_accuracy(torch.rand(1, 4, 3), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="all -1"):
        alignment_accuracy(torch.rand(1, 4, 3), torch.full((1, 4), -1))
    with pytest.raises(ValueError, match="targets bool"):
        attention_on_targets(torch.rand(1, 4, 3), torch.rand(1, 4, 3))
    with pytest.raises(ValueError, match="max_len"):
        greedy_decode(model, b.src, b.src_mask, max_len=0)
