"""The small-LM component (tasks/small_lm): corpus, LoRA under torch.func, the structured LoRA
NTK, and the cached pretraining (lock, atomic write, corruption)."""

from __future__ import annotations

import logging
import multiprocessing

import numpy as np
import pytest
import torch
from torch.func import functional_call, jacrev, jvp, vmap

from callbacks.spectra import ntk_jacobian, ntk_matrix
from callbacks.spectra.ntk import flatten_ntk
from runner.validation import ConfigError
from tasks.small_lm import pretrain as pretrain_mod
from tasks.small_lm.config import BackboneConfig, CorpusConfig, PretrainConfig
from tasks.small_lm.corpus import build_corpus, chains_of
from tasks.small_lm.lora import add_lora, lora_named_parameters
from tasks.small_lm.model import SequenceClassifier, additive_causal_mask, build_backbone

TINY_MODEL = BackboneConfig(vocab_size=16, seq_len=8, d_model=16, n_layers=2, n_heads=2, d_ff=32)
TINY_CORPUS = CorpusConfig(n_topics=2, topic_tokens=8, n_docs=600, min_len=4)
TINY_TRAIN = PretrainConfig(steps=5, batch_size=8)


def tiny_classifier(b_std: float, layers=(0, 1), matrices=("q", "v"), seed: int = 0):
    torch.manual_seed(seed)
    lm = build_backbone(TINY_MODEL)
    clf = SequenceClassifier(lm.transformer, 3, TINY_MODEL.pad_id)
    for p in clf.parameters():
        p.requires_grad_(False)
    add_lora(clf.transformer, list(layers), list(matrices), rank=2, scale=1.5, b_std=b_std,
             seed=seed)
    return clf.double().eval()


def tokens(n: int = 12, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, TINY_MODEL.vocab_size, (n, TINY_MODEL.seq_len), generator=gen)
    lengths = torch.randint(2, TINY_MODEL.seq_len + 1, (n,), generator=gen)
    x[torch.arange(TINY_MODEL.seq_len)[None, :] >= lengths[:, None]] = TINY_MODEL.pad_id
    return x


def explicit_jacobian(clf, x):
    named = lora_named_parameters(clf)
    prm = {n: p.detach() for n, p in named}

    def f(p, xi):
        return functional_call(clf, p, (xi.unsqueeze(0),)).reshape(-1)

    jac = vmap(jacrev(f), (None, 0))(prm, x)
    return torch.cat([jac[n].reshape(x.shape[0], 3, -1) for n in prm], dim=2)


# ----------------------------------------------------------------------------- corpus
def test_corpus_is_a_function_of_config_and_seed_with_padding_after_each_length():
    a, b = build_corpus(TINY_CORPUS, TINY_MODEL, 3), build_corpus(TINY_CORPUS, TINY_MODEL, 3)
    assert all(a[k].equal(b[k]) for k in a)
    assert not a["tokens"].equal(build_corpus(TINY_CORPUS, TINY_MODEL, 4)["tokens"])
    t, lengths = a["tokens"], a["lengths"]
    assert int(lengths.min()) >= TINY_CORPUS.min_len and int(lengths.max()) <= TINY_MODEL.seq_len
    pos = torch.arange(TINY_MODEL.seq_len)[None, :]
    assert ((t == TINY_MODEL.pad_id) == (pos >= lengths[:, None])).all()
    # each topic moves on its own tokens: a document's tokens lie in its topic's subset
    chains = chains_of(TINY_CORPUS, TINY_MODEL, 3)
    for row in range(20):
        z = int(a["topics"][row])
        real = t[row, :int(lengths[row])].numpy()
        assert np.isin(real, chains["tokens"][z]).all()


def test_key_bigrams_are_inserted_at_about_their_rate():
    cfg = CorpusConfig(n_topics=2, topic_tokens=8, n_docs=2000, min_len=8, key_prob=0.2)
    docs = build_corpus(cfg, TINY_MODEL, 0)
    chains = chains_of(cfg, TINY_MODEL, 0)
    z = docs["topics"].numpy()
    t = docs["tokens"].numpy()
    keys = chains["tokens"][z[:, None, None], chains["keys"][z]]  # (n, key_bigrams, 2) tokens
    hits = ((t[:, None, :-1] == keys[:, :, :1]) & (t[:, None, 1:] == keys[:, :, 1:])).any(1)
    rate = hits.sum() / (docs["lengths"].numpy() - 1).sum()
    assert rate > 0.15  # ≥ the insertion rate ~ 0.2·(1 − 0.2) minus overlaps, far above chance


# ----------------------------------------------------------------------------- model and LoRA
def test_the_4d_additive_mask_gives_bit_identical_outputs_to_no_mask_on_right_padding():
    lm = build_backbone(TINY_MODEL).double()
    x = tokens()
    lengths = (x != TINY_MODEL.pad_id).sum(1)
    mask = additive_causal_mask(lengths, TINY_MODEL.seq_len, torch.float64)
    plain = lm.transformer(input_ids=x).last_hidden_state
    masked = lm.transformer(input_ids=x, attention_mask=mask).last_hidden_state
    last = lengths - 1
    rows = torch.arange(x.shape[0])
    assert torch.equal(plain[rows, last], masked[rows, last])


def test_lora_with_b_zero_leaves_the_model_unchanged_and_b_nonzero_changes_it():
    torch.manual_seed(0)
    lm = build_backbone(TINY_MODEL)
    ref = SequenceClassifier(lm.transformer, 3, TINY_MODEL.pad_id)
    x = tokens()
    before = ref(x).detach()
    add_lora(ref.transformer, [0, 1], ["q", "k", "v"], rank=2, scale=1.0, b_std=0.0, seed=0)
    assert torch.equal(ref(x), before)
    assert all(not p.requires_grad for n, p in ref.transformer.named_parameters()
               if "lora_" not in n)
    assert len(lora_named_parameters(ref)) == 2 * 3 * 2
    other = tiny_classifier(b_std=0.5).float()
    assert not torch.allclose(other(x), before, atol=1e-4)


def test_lora_composes_with_functional_call_vmap_jacrev_and_jvp():
    clf = tiny_classifier(b_std=0.3)
    x = tokens()
    named = lora_named_parameters(clf)
    prm = {n: p.detach() for n, p in named}
    tangent = {n: torch.randn_like(p) for n, p in prm.items()}
    f0, jv = jvp(lambda p: functional_call(clf, p, (x,)), (prm,), (tangent,))
    eps = 1e-6
    plus = functional_call(clf, {n: p + eps * tangent[n] for n, p in prm.items()}, (x,))
    minus = functional_call(clf, {n: p - eps * tangent[n] for n, p in prm.items()}, (x,))
    assert torch.allclose(jv, (plus - minus) / (2 * eps), rtol=1e-6, atol=1e-8)
    J = explicit_jacobian(clf, x)
    flat = torch.cat([tangent[n].reshape(-1) for n in prm])
    assert torch.allclose(torch.einsum("icp,p->ic", J, flat), jv, rtol=1e-10, atol=1e-12)
    assert torch.allclose(f0, clf(x))


@pytest.mark.parametrize("b_std", [0.0, 0.4])
def test_structured_lora_ntk_equals_explicit_jacobian_gram(b_std):
    clf = tiny_classifier(b_std=b_std, layers=(1, 0), matrices=("v", "k"))
    x = tokens(10)
    J = explicit_jacobian(clf, x)
    K_explicit = torch.einsum("icp,jep->ijce", J, J)
    K = ntk_matrix(clf, x, params=[p for _, p in lora_named_parameters(clf)],
                   method="structured")
    scale = float(K_explicit.abs().max())
    assert float((K - K_explicit).abs().max()) <= 1e-10 * scale
    traced = ntk_matrix(clf, x, params=[p for _, p in lora_named_parameters(clf)],
                        method="structured", trace_outputs=True)
    assert torch.allclose(traced, torch.einsum("ijcc->ij", K_explicit), rtol=1e-10, atol=0)
    Js = ntk_jacobian(clf, x, params=[p for _, p in lora_named_parameters(clf)],
                      method="structured")
    assert float((Js - J).abs().max()) <= 1e-10 * float(J.abs().max())
    a_cols = torch.cat([torch.full((p.numel(),), n.endswith("lora_A"))
                        for n, p in lora_named_parameters(clf)])
    if b_std == 0:  # the standard init: the Jacobian w.r.t. A is exactly zero
        assert float(J[:, :, a_cols].abs().max()) == 0.0
        assert float(J[:, :, ~a_cols].abs().max()) > 0
    else:
        assert float(J[:, :, a_cols].abs().max()) > 0
    assert torch.linalg.eigvalsh(flatten_ntk(K)).min() > -1e-10 * scale


@pytest.mark.parametrize(("layers", "matrices", "key"), [
    ([2], ["q"], "task.lora_layers"), ([-1], ["q"], "task.lora_layers"),
    ([0], ["o"], "task.lora_matrices"), ([0], [], "task.lora_matrices")])
def test_bad_lora_choices_name_the_key_and_the_allowed_values(layers, matrices, key):
    lm = build_backbone(TINY_MODEL)
    with pytest.raises(ConfigError) as err:
        add_lora(lm.transformer, layers, matrices, 2, 1.0, 0.0, 0)
    assert err.value.key == key
    assert ("0..1" in str(err.value)) if key.endswith("layers") else ("q, k, v" in str(err.value))


# ----------------------------------------------------------------------------- cache
def test_pretraining_is_cached_then_loaded_fast_and_logged(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="spectrum")
    first = pretrain_mod.cached_backbone(str(tmp_path), TINY_MODEL, TINY_CORPUS, TINY_TRAIN, 0)
    assert not first.loaded and first.path.exists()
    assert not list(first.path.parent.glob(".*"))  # no temporary file left behind

    def refuse(*args, **kwargs):
        raise AssertionError("pretrained a cached backbone again")

    monkeypatch.setattr(pretrain_mod, "pretrain", refuse)
    again = pretrain_mod.cached_backbone(str(tmp_path), TINY_MODEL, TINY_CORPUS, TINY_TRAIN, 0)
    assert again.loaded and again.seconds < 2.0
    assert "loaded the cached backbone" in caplog.text
    for (k, v), (k2, v2) in zip(first.lm.state_dict().items(), again.lm.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    assert again.metrics == first.metrics
    x = tokens()
    assert torch.equal(first.lm(input_ids=x).logits, again.lm(input_ids=x).logits)
    # another seed or size is another checkpoint
    other = pretrain_mod.backbone_key(TINY_MODEL, TINY_CORPUS, TINY_TRAIN, 1)
    assert other != pretrain_mod.backbone_key(TINY_MODEL, TINY_CORPUS, TINY_TRAIN, 0)


def test_pretraining_and_loading_leave_the_callers_random_stream_alone(tmp_path):
    torch.manual_seed(5)
    expected = torch.rand(3)
    for _ in ("pretrain", "load"):
        torch.manual_seed(5)
        pretrain_mod.cached_backbone(str(tmp_path), TINY_MODEL, TINY_CORPUS, TINY_TRAIN, 0)
        assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_corrupt_checkpoint_is_detected_rebuilt_and_reported(tmp_path, caplog, damage):
    caplog.set_level(logging.INFO, logger="spectrum")
    first = pretrain_mod.cached_backbone(str(tmp_path), TINY_MODEL, TINY_CORPUS, TINY_TRAIN, 0)
    data = first.path.read_bytes()
    if damage == "truncate":
        first.path.write_bytes(data[: len(data) // 2])
    else:  # one flipped byte in the last weight
        first.path.write_bytes(data[:-3] + bytes([data[-3] ^ 0xFF]) + data[-2:])
    again = pretrain_mod.cached_backbone(str(tmp_path), TINY_MODEL, TINY_CORPUS, TINY_TRAIN, 0)
    assert not again.loaded
    assert "is corrupt" in caplog.text and "rebuilding" in caplog.text
    for (k, v), v2 in zip(first.lm.state_dict().items(), again.lm.state_dict().values()):
        assert torch.equal(v, v2), k  # the same deterministic pretraining
    assert pretrain_mod.cached_backbone(str(tmp_path), TINY_MODEL, TINY_CORPUS, TINY_TRAIN,
                                        0).loaded


def test_two_processes_share_one_pretraining(tmp_path):
    """Two jobs start together (as in a launcher=local sweep): one trains, the other waits on
    the lock and loads. The jobs are forked from this process (as a DataLoader's workers are),
    so neither imports the stack again."""
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()

    def job() -> None:
        try:
            torch.set_num_threads(1)
            b = pretrain_mod.cached_backbone(str(tmp_path), TINY_MODEL, TINY_CORPUS,
                                             PretrainConfig(steps=40, batch_size=8), 0)
            results.put("LOADED" if b.loaded else "TRAINED")
        except BaseException as err:  # the parent reports it
            results.put(f"{type(err).__name__}: {err}")
            raise

    procs = [ctx.Process(target=job) for _ in range(2)]
    for proc in procs:
        proc.start()
    words = sorted(results.get(timeout=240) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
    assert [proc.exitcode for proc in procs] == [0, 0], words
    assert words == ["LOADED", "TRAINED"]
    assert len(list((tmp_path / "small_lm").glob("backbone-*.safetensors"))) == 1
