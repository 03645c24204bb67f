"""QDG: token selection and per-token gradients, on the tiny offline suite."""

import numpy as np
import pytest
import torch

from quanta._validation import QuantaInputError
from quanta.lm.corpus import load_documents, tokenize_documents
from quanta.lm.losses import token_losses
from quanta.lm.minisuite import build_suite_config, train_minisuite
from quanta.lm.suite import load_model, load_tokenizer, resolve_suite
from quanta.qdg.grads import (
    naive_token_gradient,
    per_token_gradients,
    projection_error,
    select_params,
)
from quanta.qdg.select import induction_mask, select_tokens


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    train_minisuite(build_suite_config("tiny"), out)
    ref = resolve_suite(str(out))[-1]
    tok, model = load_tokenizer(ref), load_model(ref)
    corpus = tokenize_documents(load_documents("stdlib:test", max_docs=6)[0], tok, max_len=120)
    return model, corpus


def test_induction_mask_matches_a_plain_loop(lm):
    _, corpus = lm
    mask = induction_mask(corpus)
    want = []
    for d in range(corpus.n_docs):
        ids = corpus.doc(d).tolist()
        seen = set()
        for pos in range(1, len(ids)):
            tri = tuple(ids[pos - 2 : pos + 1]) if pos >= 2 else None
            want.append(tri is not None and tri in seen)
            if tri is not None:
                seen.add(tri)
    assert mask.tolist() == want and any(want)


def test_selection_threshold_subsampling_and_errors(lm):
    model, corpus = lm
    losses = token_losses(model, corpus)
    threshold = float(np.quantile(losses, 0.3))
    every = select_tokens(corpus, losses, threshold=threshold, every=3, n=10**6)
    assert (every["loss"] < threshold).all()
    assert not induction_mask(corpus)[every["row"]].any()
    eligible = np.flatnonzero((losses < threshold) & ~induction_mask(corpus))
    assert every["row"].tolist() == eligible[::3].tolist()
    a = select_tokens(corpus, losses, threshold=threshold, n=10, seed=1)
    b = select_tokens(corpus, losses, threshold=threshold, n=10, seed=1)
    assert a.equals(b) and len(a) == 10 and a["row"].is_monotonic_increasing
    with pytest.raises(QuantaInputError, match="No token is left to select"):
        select_tokens(corpus, losses, threshold=1e-9)


def test_exact_gradients_equal_a_naive_per_token_loop(lm, tmp_path):
    model, corpus = lm
    losses = token_losses(model, corpus)
    samples = select_tokens(corpus, losses, threshold=float(np.median(losses)), n=12, seed=0)
    info = per_token_gradients(model, corpus, samples, tmp_path / "g.npy", memory_bytes=1 << 16)
    grads = np.load(tmp_path / "g.npy", mmap_mode="r")
    params = select_params(model)
    assert info["n_backward"] == len(samples) and grads.shape == (12, info["dim"])
    assert not any("embed" in n or "layernorm" in n for n in info["params"])
    for i, r in samples.iterrows():
        want = naive_token_gradient(model, corpus, int(r["doc_id"]), int(r["pos"]), params)
        np.testing.assert_allclose(grads[i], want.numpy(), rtol=1e-5, atol=1e-6 * want.abs().max())


def test_projection_keeps_cosines(lm, tmp_path):
    model, corpus = lm
    losses = token_losses(model, corpus)
    samples = select_tokens(corpus, losses, threshold=float(np.median(losses)), n=40, seed=0)
    per_token_gradients(model, corpus, samples, tmp_path / "exact.npy")
    info = per_token_gradients(
        model, corpus, samples, tmp_path / "proj.npy", projection_dim=8192, seed=3
    )
    assert info["stored_dim"] == 8192
    err = projection_error(np.load(tmp_path / "exact.npy"), np.load(tmp_path / "proj.npy"))
    assert err["mean"] < 0.02 and err["max"] < 0.1, err


def test_bad_gradient_inputs(lm, tmp_path):
    model, corpus = lm
    with pytest.raises(QuantaInputError, match="matches no parameter"):
        select_params(model, "no_such_parameter")
    samples = select_tokens(corpus, token_losses(model, corpus), threshold=100.0, n=2)
    with pytest.raises(ValueError, match="projection_dim"):
        per_token_gradients(model, corpus, samples, tmp_path / "g.npy", projection_dim=0)
    assert not (tmp_path / "g.npy").exists()


def test_non_finite_gradients_are_refused(lm, tmp_path):
    model, corpus = lm
    samples = select_tokens(corpus, token_losses(model, corpus), threshold=100.0, n=2)
    _, p = select_params(model)[0]
    saved = p.detach().clone()
    with torch.no_grad():
        p.fill_(float("nan"))
    try:
        with pytest.raises(QuantaInputError, match="Non-finite gradient"):
            per_token_gradients(model, corpus, samples, tmp_path / "g.npy")
        assert not (tmp_path / "g.npy").exists()
    finally:
        with torch.no_grad():
            p.copy_(saved)
