"""Checks that need a CUDA device; skipped where there is none (CI, the developers' machines)."""

import dataclasses

import numpy as np
import pytest
import torch

from quanta.parity import FusedParityMLP, SparseParityTask, train_parity
from quanta.parity.model import member_losses

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_explicit_backward_equals_autograd_on_cuda():
    net = FusedParityMLP(9, 13, [5, 17, 40]).cuda()
    task = SparseParityTask(9, 13, 3, alpha=0.4)
    b = task.sample_compact(500, generator=torch.Generator().manual_seed(0))
    bits, t, y = (v.cuda() for v in b)
    member_losses(net.forward_compact(bits, t), y).mean(0).sum().backward()
    want = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad()
    net.loss_and_grad(bits, t, y, chunk_rows=100)
    for name, p in net.named_parameters():
        torch.testing.assert_close(p.grad, want[name], rtol=1e-4, atol=1e-6, msg=name)


def test_cuda_training_matches_cpu_curves(tiny_cfg):
    cpu = train_parity(tiny_cfg).curves
    gpu = train_parity(dataclasses.replace(tiny_cfg, device="cuda")).curves
    np.testing.assert_allclose(gpu["loss_nats"], cpu["loss_nats"], rtol=1e-3, atol=1e-4)


def test_per_token_losses_on_cuda_match_cpu(tmp_path):
    from quanta.lm.corpus import load_documents, tokenize_documents
    from quanta.lm.losses import token_losses
    from quanta.lm.minisuite import build_suite_config, train_minisuite
    from quanta.lm.suite import load_model, load_tokenizer, resolve_suite

    train_minisuite(build_suite_config("tiny"), tmp_path)
    ref = resolve_suite(str(tmp_path))[-1]
    tok = load_tokenizer(ref)
    corpus = tokenize_documents(load_documents("stdlib:test", max_docs=6)[0], tok, max_len=200)
    cpu = token_losses(load_model(ref), corpus)
    gpu = token_losses(load_model(ref, device="cuda"), corpus, device="cuda")
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-4)
