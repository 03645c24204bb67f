import pytest
import torch
import torch.nn.functional as F

from quanta.parity import FusedParityMLP, SparseParityTask, n_params_mlp
from quanta.parity.model import member_losses


def test_paper_parameter_count():
    net = FusedParityMLP(500, 100, widths=[9, 10, 500])
    assert net.n_params_per_member() == [603 * w + 2 for w in (9, 10, 500)]
    total = sum(p.numel() for p in net.parameters())
    assert total == sum(net.n_params_per_member())  # no hidden extra parameters
    for m, member in enumerate(net.member_modules()):
        assert sum(p.numel() for p in member.parameters()) == net.n_params_per_member()[m]
    assert n_params_mlp(600, 500) == 603 * 500 + 2


def test_member_init_independent_of_ensemble():
    alone = FusedParityMLP(6, 10, widths=[16], init_seeds=[3]).member_modules()[0]
    fused = FusedParityMLP(6, 10, widths=[4, 16, 8], init_seeds=[0, 3, 1]).member_modules()[1]
    for a, b in zip(alone.parameters(), fused.parameters(), strict=True):
        assert torch.equal(a, b)


def test_init_matches_pytorch_default_bounds():
    net = FusedParityMLP(500, 100, widths=[64]).member_modules()[0]
    assert net[0].weight.abs().max() <= 600**-0.5
    assert net[0].weight.abs().max() > 0.9 * 600**-0.5  # uniform fills the whole range
    assert net[2].weight.abs().max() <= 64**-0.5


def test_compact_forward_equals_dense_and_members():
    task = SparseParityTask(7, 9, 3, alpha=0.4)
    batch = task.sample_compact(50, generator=torch.Generator().manual_seed(1))
    net = FusedParityMLP(7, 9, widths=[3, 11, 5], init_seeds=[0, 1, 2])
    x = batch.dense(7)
    compact, dense = net.forward_compact(batch.bits, batch.task), net(x)
    torch.testing.assert_close(compact, dense, rtol=1e-5, atol=1e-6)
    for m, member in enumerate(net.member_modules()):
        torch.testing.assert_close(compact[:, m], member(x), rtol=1e-5, atol=1e-6)


def test_no_gradient_crosses_members():
    net = FusedParityMLP(4, 6, widths=[3, 5])
    task = SparseParityTask(4, 6, 2, alpha=0.4)
    b = task.sample_compact(20, generator=torch.Generator().manual_seed(0))
    member_losses(net.forward_compact(b.bits, b.task), b.y).mean(0)[0].backward()
    assert net.w_bits.grad[:, 3:].abs().sum() == 0  # member 1's units untouched
    assert net.w2.grad[3:].abs().sum() == 0 and net.b2.grad[1].abs().sum() == 0
    assert net.w_bits.grad[:, :3].abs().sum() > 0


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_fused_training_equals_one_by_one(weight_decay):
    """The correctness proof of the fusion: same init, same batches ⇒ same loss curves."""
    n_tasks, n_bits, widths, seeds = 8, 12, [5, 17, 40], [0, 1, 2]
    task = SparseParityTask(n_tasks, n_bits, 3, alpha=0.4)
    gen = torch.Generator().manual_seed(0)
    batches = [task.sample_compact(128, generator=gen) for _ in range(60)]

    fused = FusedParityMLP(n_tasks, n_bits, widths, init_seeds=seeds)
    singles = fused.member_modules()  # identical initial weights, independent modules
    init = [p.detach().clone() for p in fused.parameters()]
    opt = torch.optim.AdamW(fused.parameters(), lr=3e-3, weight_decay=weight_decay)
    opts = [torch.optim.AdamW(s.parameters(), lr=3e-3, weight_decay=weight_decay) for s in singles]
    fused_curve, single_curves = [], []
    for b in batches:
        losses, _ = fused.loss_and_grad(b.bits, b.task, b.y, chunk_rows=50)  # the training path
        opt.step()
        fused_curve.append(losses)
        step_losses = []
        x = b.dense(n_tasks)
        for single, o in zip(singles, opts, strict=True):
            loss = F.cross_entropy(single(x), b.y)
            o.zero_grad()
            loss.backward()
            o.step()
            step_losses.append(loss.detach())
        single_curves.append(torch.stack(step_losses))
    torch.testing.assert_close(
        torch.stack(fused_curve), torch.stack(single_curves), rtol=1e-4, atol=1e-5
    )
    moved = [(p.detach() - p0).abs().max() for p, p0 in zip(fused.parameters(), init, strict=True)]
    assert min(moved) > 1e-2  # every parameter group really trained (lr 3e-3 × 60 steps)
    for got, want in zip(fused.member_modules(), singles, strict=True):
        for a, b in zip(got.parameters(), want.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_bad_widths_and_seeds():
    with pytest.raises(
        ValueError,
        match=r"'widths' parameter of FusedParityMLP must be a "
        r"non-empty list of ints >= 1\. Got \[4, 0\]",
    ):
        FusedParityMLP(4, 6, widths=[4, 0])
    with pytest.raises(ValueError, match=r"one seed per width \(2\)\. Got 1 instead"):
        FusedParityMLP(4, 6, widths=[4, 5], init_seeds=[1])


@pytest.mark.parametrize("chunk_rows", [7, 64, 10_000])
def test_explicit_backward_equals_autograd(chunk_rows):
    # 23 members: three layer-2 blocks (10, 10, 3), so block boundaries are exercised.
    widths = [3 + (i * 7) % 19 for i in range(23)]
    net = FusedParityMLP(9, 13, widths, init_seeds=list(range(23)))
    task = SparseParityTask(9, 13, 3, alpha=0.4)
    b = task.sample_compact(300, generator=torch.Generator().manual_seed(2))
    logits = net.forward_compact(b.bits, b.task)
    want = member_losses(logits, b.y).mean(0)
    want.sum().backward()
    want_grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    want_acc = (logits.argmax(-1) == b.y[:, None]).float().mean(0)
    net.zero_grad(set_to_none=True)
    loss, acc = net.loss_and_grad(b.bits, b.task, b.y, chunk_rows=chunk_rows)
    torch.testing.assert_close(loss, want.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(acc, want_acc)
    for name, p in net.named_parameters():
        torch.testing.assert_close(p.grad, want_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_chunk_rows_is_cache_sized():
    assert FusedParityMLP(500, 100, [500] * 4).chunk_rows() == (8 << 20) // (4 * 2000)
    assert FusedParityMLP(4, 6, [2]).chunk_rows() == 65_536


def test_explicit_backward_equals_autograd_with_three_classes():
    # The step's head keeps C − 1 logits a member (z_c − z_0) and rebuilds class 0's gradient
    # as minus the others' sum: at C = 3 that is two columns a member and a real sum.
    net = FusedParityMLP(5, 7, [4, 9, 2], init_seeds=[0, 1, 2], n_classes=3)
    g = torch.Generator().manual_seed(3)
    bits = torch.randint(0, 2, (90, 7), generator=g, dtype=torch.uint8)
    task = torch.randint(0, 5, (90,), generator=g)
    y = torch.randint(0, 3, (90,), generator=g)
    logits = net.forward_compact(bits, task)
    want = member_losses(logits, y).mean(0)
    want.sum().backward()
    want_grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad(set_to_none=True)
    loss, acc = net.loss_and_grad(bits, task, y, chunk_rows=16)
    torch.testing.assert_close(loss, want.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(acc, (logits.argmax(-1) == y[:, None]).float().mean(0))
    for name, p in net.named_parameters():
        torch.testing.assert_close(p.grad, want_grads[name], rtol=1e-4, atol=1e-6, msg=name)
