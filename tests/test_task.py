import math

import numpy as np
import pytest
import torch
from scipy import stats

from quanta.parity import SparseParityTask, zipf_probs


def test_paper_frequencies_known_answer():
    # PAPER.md §2: n_tasks=500, α=0.4.
    p = zipf_probs(500, 0.4)
    assert p.sum() == pytest.approx(1.0)
    assert p[0] == pytest.approx(0.3451, abs=5e-5)
    assert p[1] == pytest.approx(0.1308, abs=5e-5)
    assert p[9] == pytest.approx(0.01374, abs=5e-6)
    assert p[499] == pytest.approx(5.75e-5, rel=1e-3)


def test_task_probs_follow_alpha_plus_one_exponent():
    task = SparseParityTask(50, 20, 3, alpha=0.7, offset=2.0)
    p = task.probs.numpy()
    ranks = np.arange(1, 51) + 2.0
    np.testing.assert_allclose(p[1:] / p[:-1], (ranks[1:] / ranks[:-1]) ** -1.7, rtol=1e-12)
    assert task.probs.dtype == torch.float64


def test_uniform_control():
    task = SparseParityTask(10, 12, 3, alpha=0.4, uniform=True)
    np.testing.assert_allclose(task.probs.numpy(), np.full(10, 0.1))


@pytest.mark.parametrize(("n_tasks", "n_bits", "k"), [(500, 100, 3), (20, 6, 3), (56, 8, 3)])
def test_subsets_distinct_sorted_in_range(n_tasks, n_bits, k):
    subsets = SparseParityTask(n_tasks, n_bits, k, alpha=0.4, seed=3).subsets
    assert subsets.shape == (n_tasks, k) and subsets.dtype == torch.int64
    assert bool((subsets[:, 1:] > subsets[:, :-1]).all())  # sorted, no repeated bit
    assert subsets.min() >= 0 and subsets.max() < n_bits
    assert len({tuple(r) for r in subsets.tolist()}) == n_tasks


def test_subsets_depend_on_seed_only():
    a = SparseParityTask(30, 20, 3, alpha=0.4, seed=1).subsets
    b = SparseParityTask(30, 20, 3, alpha=0.9, seed=1).subsets
    c = SparseParityTask(30, 20, 3, alpha=0.4, seed=2).subsets
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_subsets_huge_space_rejection_path():
    # C(200, 4) > the enumeration limit: the rejection sampler is used.
    subsets = SparseParityTask(300, 200, 4, alpha=0.4).subsets
    assert len({tuple(r) for r in subsets.tolist()}) == 300


def test_labels_are_parity_of_chosen_bits():
    task = SparseParityTask(8, 12, 3, alpha=0.4, seed=5)
    x, y, t = task.sample(500, generator=torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32 and x.shape == (500, 20)
    for row, label, tid in zip(x.numpy(), y.numpy(), t.numpy(), strict=True):
        control, bits = row[:8], row[8:]
        assert control.sum() == 1 and control[tid] == 1  # one-hot code of the subtask
        expected = int(sum(bits[j] for j in task.subsets[tid].tolist())) % 2
        assert label == expected


def test_empirical_task_frequencies_match_probs():
    task = SparseParityTask(20, 10, 3, alpha=0.4)
    batch = task.sample_compact(200_000, generator=torch.Generator().manual_seed(0))
    counts = np.bincount(batch.task.numpy(), minlength=20)
    expected = task.probs.numpy() * counts.sum()
    _, pvalue = stats.chisquare(counts, expected)
    assert pvalue > 1e-3
    # Bits are fair coins and labels balanced.
    assert abs(batch.bits.float().mean().item() - 0.5) < 0.005
    assert abs(batch.y.float().mean().item() - 0.5) < 0.005


def test_same_generator_seed_same_batch():
    task = SparseParityTask(20, 10, 3, alpha=0.4)
    a = task.sample_compact(100, generator=torch.Generator().manual_seed(7))
    b = task.sample_compact(100, generator=torch.Generator().manual_seed(7))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_per_task_set_has_exactly_m_of_each():
    task = SparseParityTask(7, 10, 3, alpha=0.4)
    s = task.per_task_set(13, generator=torch.Generator().manual_seed(0))
    assert np.bincount(s.task.numpy()).tolist() == [13] * 7
    assert torch.equal(s.y, task.labels(s.bits, s.task))


def test_dataset_has_d_samples():
    task = SparseParityTask(7, 10, 3, alpha=0.4)
    assert task.dataset(1234, generator=torch.Generator().manual_seed(0)).task.numel() == 1234


def test_dense_matches_compact():
    task = SparseParityTask(5, 6, 2, alpha=0.4)
    batch = task.sample_compact(9, generator=torch.Generator().manual_seed(0))
    x = batch.dense(5)
    assert torch.equal(x[:, :5].argmax(1), batch.task)
    assert torch.equal(x[:, 5:], batch.bits.float())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"k": 12},
            r"The 'k' parameter of SparseParityTask must be an int in the range "
            r"\[1, 10\]\. Got 12 instead\.",
        ),
        ({"alpha": -0.1}, r"'alpha' parameter .* range \[0, inf\)\. Got -0\.1 instead"),
        ({"n_tasks": 121}, r"'n_tasks' parameter .* at most C\(n_bits, k\) = C\(10, 3\) = 120"),
        ({"n_tasks": 0}, r"'n_tasks' parameter .* \[1, inf\)\. Got 0"),
        ({"alpha": float("nan")}, r"'alpha' parameter .* finite float"),
    ],
)
def test_bad_input_messages(kwargs, match):
    args = {"n_tasks": 5, "n_bits": 10, "k": 3, "alpha": 0.4} | kwargs
    with pytest.raises(ValueError, match=match):
        SparseParityTask(**args)


def test_full_subset_space_can_be_used():
    task = SparseParityTask(math.comb(7, 3), 7, 3, alpha=0.4)
    assert len({tuple(r) for r in task.subsets.tolist()}) == 35


@pytest.mark.parametrize("n_bits", [5, 63, 64, 65, 130])
def test_word_packed_labels_match_definition_across_word_boundaries(n_bits):
    # Bits come from 64-bit words and labels from masked XOR folds; the gather definition in
    # ``labels`` is the independent check, across word boundaries and the sign bit.
    task = SparseParityTask(10, n_bits, min(3, n_bits), alpha=0.4, seed=1)
    batch = task.sample_compact(4000, generator=torch.Generator().manual_seed(0))
    assert batch.bits.shape == (4000, n_bits) and batch.bits.is_contiguous()
    assert torch.equal(batch.y, task.labels(batch.bits, batch.task))
    assert abs(batch.bits.float().mean(0) - 0.5).max() < 0.05  # every bit column is fair
