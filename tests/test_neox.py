"""The compact GPT-NeoX (quanta.lm.neox) against transformers' GPTNeoXForCausalLM loading the
folder it saves: logits and gradients, f32; replicas trained together vs one at a time."""

from __future__ import annotations

import pytest
import torch

from quanta._validation import QuantaInputError
from quanta.lm.minisuite import SUITE_PRESETS, MiniSuiteConfig, _model_config
from quanta.lm.neox import NeoX, clip_grad_norm_per_replica, neox_training_step

VOCAB = 300
CPU_SIZES = SUITE_PRESETS["cpu"]["sizes"]
# (hidden, layers, rotary fraction, parallel residual): the cpu preset's shapes as trained,
# then a full and a half rotary, and the sequential residual.
CASES = [(h, n, 0.25, True) for h, n in CPU_SIZES] + [
    (64, 2, 1.0, True),
    (96, 2, 0.5, False),
    (32, 1, 0.25, False),
]


def _config(hidden: int, layers: int, pct: float, parallel: bool):  # type: ignore[no-untyped-def]
    cfg = MiniSuiteConfig(**{**SUITE_PRESETS["cpu"], "context": 64})
    config = _model_config(cfg, hidden, layers, VOCAB)
    config.rope_parameters["partial_rotary_factor"] = pct
    config.use_parallel_residual = parallel
    return config


def _scrambled(config, replicas: int = 1, seed: int = 0) -> NeoX:  # type: ignore[no-untyped-def]
    """A NeoX whose every weight is random and O(0.1–1) (layer-norm gains around 1, biases
    nonzero), so that attention, rotary and every bias shape the logits."""
    g = torch.Generator().manual_seed(seed)
    model = NeoX(config, replicas=replicas, generator=g)
    with torch.no_grad():
        for name, p in model._named_stacked():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * noise)
            elif name == "lm_head.weight":  # logits O(1): the 1e-5 is f32 rounding of O(1)
                p.copy_(0.7 / p.shape[-1] ** 0.5 * noise)
            else:
                p.copy_((0.3 if p.dim() == 3 else 0.1) * noise)
    return model


def _hf(model: NeoX, replica: int, tmp_path):  # type: ignore[no-untyped-def]
    from transformers import GPTNeoXForCausalLM

    folder = tmp_path / f"replica{replica}"
    model.save_replica(replica, folder)
    return GPTNeoXForCausalLM.from_pretrained(str(folder), dtype=torch.float32)


@pytest.mark.parametrize(("hidden", "layers", "pct", "parallel"), CASES)
def test_logits_and_loss_equal_hf_loading_the_saved_folder(tmp_path, hidden, layers, pct, parallel):
    config = _config(hidden, layers, pct, parallel)
    model = _scrambled(config, replicas=2)
    x = torch.randint(0, VOCAB, (2, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, losses = model(x), model.loss(x)
    for r in range(2):
        hf = _hf(model, r, tmp_path).eval()
        with torch.no_grad():
            out = hf(input_ids=x, labels=x)
        assert out.logits.abs().max() > 1.0  # not a trivially flat model
        torch.testing.assert_close(logits[r], out.logits, atol=1e-5, rtol=1e-5)
        assert abs(float(losses[r]) - float(out.loss)) < 1e-5


@pytest.mark.parametrize(("hidden", "layers", "pct", "parallel"), [CASES[3], CASES[-2]])
def test_gradients_equal_hf(tmp_path, hidden, layers, pct, parallel):
    model = _scrambled(_config(hidden, layers, pct, parallel), replicas=1)
    hf = _hf(model, 0, tmp_path).train()
    x = torch.randint(0, VOCAB, (3, 40), generator=torch.Generator().manual_seed(2))
    model.loss(x).sum().backward()
    hf(input_ids=x, labels=x).loss.backward()
    ours = dict(model._named_stacked())
    for name, p in hf.named_parameters():
        assert p.grad is not None and float(p.grad.abs().max()) > 0
        torch.testing.assert_close(ours[name].grad[0], p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_the_fresh_initialisation_is_hf_s_scheme():
    config = _config(64, 2, 0.25, True)
    model = NeoX(config, generator=torch.Generator().manual_seed(0))
    state = model.replica_state_dict(0)
    assert torch.equal(state["gpt_neox.layers.1.input_layernorm.weight"], torch.ones(64))
    assert torch.equal(state["gpt_neox.layers.0.attention.dense.bias"], torch.zeros(64))
    std = float(state["gpt_neox.embed_in.weight"].std())
    assert abs(std - config.initializer_range) < 0.002
    again = NeoX(config, generator=torch.Generator().manual_seed(0)).replica_state_dict(0)
    assert all(torch.equal(state[k], again[k]) for k in state)  # same seed, same weights


def test_per_replica_clipping_equals_torch_clipping_each_model():
    config = _config(32, 1, 0.25, True)
    model = _scrambled(config, replicas=3)
    x = torch.randint(0, VOCAB, (2, 32), generator=torch.Generator().manual_seed(3))
    (model.loss(x) * torch.tensor([1.0, 50.0, 0.001])).sum().backward()  # norms above/below 1
    before = [[p.grad[r].clone() for p in model.parameters()] for r in range(3)]
    norms = clip_grad_norm_per_replica(model, 1.0)
    for r in range(3):
        expected = [g.clone() for g in before[r]]
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in expected]
        for p, g in zip(params, expected, strict=True):
            p.grad = g
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        assert abs(float(norm) - float(norms[r])) < 1e-4 * float(norm)
        for p, q in zip(params, model.parameters(), strict=True):
            torch.testing.assert_close(q.grad[r], p.grad)
    assert float(norms[1]) > 1.0 > float(norms[2])


def test_replicas_trained_together_follow_each_model_trained_alone():
    config = _config(32, 2, 0.25, True)
    together = _scrambled(config, replicas=2, seed=5)
    alone = [NeoX(config, replicas=1) for _ in range(2)]
    for r, m in enumerate(alone):
        m.load_replica_state_dict(0, together.replica_state_dict(r))

    def optim(m):  # type: ignore[no-untyped-def]
        opt = torch.optim.AdamW(m.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.01)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)

    runs = [(m, *optim(m)) for m in [together, *alone]]
    g = torch.Generator().manual_seed(4)
    for _ in range(3):
        x = torch.randint(0, VOCAB, (2, 32), generator=g)
        both = neox_training_step(*runs[0], x, bf16=False)
        each = [neox_training_step(*run, x, bf16=False)[0] for run in runs[1:]]
        assert both == pytest.approx(each, abs=1e-5)
    # The key bias outside the rotary dims has a true gradient of 0 (softmax ignores a shift
    # shared by all keys): its f32 noise is what Adam normalises, so it is compared apart.
    hs, rot = together.head_size, together.rot
    noise = torch.zeros(3 * hs, dtype=torch.bool)
    noise[hs + rot : 2 * hs] = True
    noise = noise.repeat(together.heads)
    for r, m in enumerate(alone):
        want, got = m.replica_state_dict(0), together.replica_state_dict(r)
        for k in want:
            w, v = want[k], got[k]
            if k.endswith("query_key_value.bias"):
                assert (w - v)[noise].abs().max() <= 3 * 3e-3 * 1.01  # 3 Adam steps at most
                w, v = w[~noise], v[~noise]
            torch.testing.assert_close(v, w, atol=1e-5, rtol=1e-4, msg=k)


def test_unsupported_configs_and_inputs_are_refused():
    config = _config(32, 1, 0.25, True)
    config.hidden_act = "relu"
    with pytest.raises(QuantaInputError, match=r"hidden_act = 'gelu'; got 'relu'"):
        NeoX(config)
    model = NeoX(_config(32, 1, 0.25, True), replicas=2)
    with pytest.raises(QuantaInputError, match=r"must be \[batch, T\] or \[2, batch, T\]"):
        model(torch.zeros(3, 2, 8, dtype=torch.long))


@pytest.mark.parametrize("bf16", [False, True])
def test_fused_head_loss_equals_plain_autograd_over_several_chunks(monkeypatch, bf16):
    import quanta.lm.neox as neox

    monkeypatch.setattr(neox, "_CHUNK_LOGITS", 7 * VOCAB)  # 7 tokens a chunk: 14 chunks, a rest
    config = _config(32, 1, 0.25, True)
    x = torch.randint(0, VOCAB, (2, 50), generator=torch.Generator().manual_seed(6))
    grads, values = [], []
    for fused in (True, False):
        model = _scrambled(config, replicas=2)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            losses = model.loss(x, fused=fused)
        (losses * torch.tensor([1.0, 3.0])).sum().backward()
        values.append(losses.detach())
        grads.append({k: p.grad.clone() for k, p in model._named_stacked()})
    tol = {"atol": 2e-3, "rtol": 2e-2} if bf16 else {"atol": 1e-6, "rtol": 1e-5}
    torch.testing.assert_close(values[0], values[1], **tol)
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], **tol, msg=k)


def test_head_loss_of_a_target_far_below_the_best_logit_is_exact_not_inf():
    """The loss is −log softmax[target]; a target 200 nats below the best logit has a softmax
    entry of 0 in float32, and its loss must still be the exact 200 + log(…) (not inf)."""
    from quanta.lm.neox import _HeadLoss

    h = torch.tensor([[[1.0], [1.0], [1.0]]])  # (R=1, N=3, H=1): logits = w
    w = torch.zeros(1, 4, 1)
    w[0, 0, 0], w[0, 1, 0] = 200.0, -1.0
    target = torch.tensor([[3, 0, 1]])  # 200 nats below, the best, 201 below
    loss = _HeadLoss.apply(h, w, target, torch.float32)
    logits = (h[0] @ w[0].T).double()
    expected = torch.nn.functional.cross_entropy(logits, target[0].long()).float()
    assert torch.isfinite(loss).all()
    torch.testing.assert_close(loss, expected.view(1), atol=1e-4, rtol=1e-6)
