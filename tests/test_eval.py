import numpy as np
import pytest
import torch
import torch.nn.functional as F

from quanta.parity import FusedParityMLP, SparseParityTask, evaluate


@pytest.mark.parametrize("chunk_size", [None, 13, 1000])
def test_batched_per_task_eval_equals_one_forward_per_task(chunk_size):
    task = SparseParityTask(7, 10, 3, alpha=0.6)
    net = FusedParityMLP(7, 10, [4, 12, 30], init_seeds=[0, 1, 2])
    data = task.per_task_set(25, generator=torch.Generator().manual_seed(3))
    ev = evaluate(net, data, task.probs, chunk_size=chunk_size)
    for m, member in enumerate(net.member_modules()):
        for i in range(7):  # the paper's way: one forward per subtask
            rows = data.task == i
            with torch.no_grad():
                out = member(data.select(rows).dense(7))
            y = data.y[rows]
            assert ev.loss[i, m].item() == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-5)
            assert ev.accuracy[i, m].item() == pytest.approx((out.argmax(1) == y).float().mean())
    np.testing.assert_allclose(ev.mixture_loss.numpy(), task.probs.numpy() @ ev.loss.numpy())


def test_iter_logits_equals_forward_compact():
    task = SparseParityTask(5, 9, 2, alpha=0.4)
    net = FusedParityMLP(5, 9, [3, 8] * 7)  # 14 members: two layer-2 blocks
    b = task.sample_compact(101, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = net.forward_compact(b.bits, b.task)
    got = torch.cat([lg for _, lg in net.iter_logits(b.bits, b.task, chunk_rows=17)])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_eval_needs_every_task():
    task = SparseParityTask(5, 9, 2, alpha=0.4)
    data = task.per_task_set(3).select(torch.arange(6))  # tasks 0 and 1 only
    with pytest.raises(ValueError, match="needs every subtask at least once"):
        evaluate(FusedParityMLP(5, 9, [3]), data, task.probs)


def test_evaluate_creates_its_tensors_on_the_datas_device():
    """The class of bug behind issue 12's CUDA crash (accumulators allocated on the default
    device, then CUDA values index_add_'ed into them), caught without a GPU: under
    ``torch.device("meta")`` every tensor created without an explicit device lands on the meta
    device, and mixing it with the real CPU data raises. Cannot catch: tensors placed on "cpu"
    explicitly, ``.cpu()``/``from_numpy`` round trips, or kernels that differ on CUDA."""
    task = SparseParityTask(7, 10, 3, alpha=0.6)
    net = FusedParityMLP(7, 10, [4, 12], init_seeds=[0, 1])
    data = task.per_task_set(25, generator=torch.Generator().manual_seed(3))
    want = evaluate(net, data, task.probs)
    with torch.device("meta"):
        got = evaluate(net, data, task.probs)
    assert got.loss.device == data.bits.device
    torch.testing.assert_close(got.loss, want.loss)
    torch.testing.assert_close(got.mixture_loss, want.mixture_loss)
