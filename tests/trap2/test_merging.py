"""Merge attacks: TIES and DARE against hand-computed and statistical expectations; the grids an attacker searches."""

from __future__ import annotations

import pytest
import torch

from bot.trap2.merging import MERGES, Asymmetric, Dare, TaskArithmetic, Ties, ties_tensor


def test_ties_trims_elects_sign_and_averages_agreeing_entries() -> None:
    a = {"w": torch.tensor([4.0, -1.0, 0.2, 3.0])}
    b = {"w": torch.tensor([2.0, 5.0, -0.1, -1.0])}
    c = {"w": torch.tensor([-1.0, 3.0, 0.3, -1.5])}
    merged = Ties().merge([a, b, c], {"density": 0.5, "lambda": 1.0})["w"]
    # trimmed: a [4, 0, 0, 3], b [2, 5, 0, 0], c [0, 3, 0, -1.5]; signs + + 0 +; agreeing means 3, 4, 0, 3
    assert merged.tolist() == [3.0, 4.0, 0.0, 3.0]
    assert ties_tensor(torch.stack([a["w"], b["w"]]), 1.0).tolist() == pytest.approx([3.0, 5.0, 0.2, 3.0])


def test_dare_keeps_the_update_in_expectation() -> None:
    tv = {"w": torch.full((200_000,), 2.0)}
    merged = Dare(seed=1).merge([tv], {"drop": 0.9, "lambda": 1.0})["w"]
    assert 0.08 < float((merged != 0).float().mean()) < 0.12
    assert float(merged.mean()) == pytest.approx(2.0, rel=0.05)
    assert set(merged.unique().tolist()) == {0.0, 20.0}


def test_task_arithmetic_and_asymmetric_weights() -> None:
    p, o = {"w": torch.tensor([1.0])}, {"w": torch.tensor([10.0])}
    assert TaskArithmetic().merge([p, o], {"lambda": 0.5})["w"].item() == 5.5
    assert Asymmetric().merge([p, o], {"others": 0.1})["w"].item() == 2.0
    assert MERGES["linear"].merge([p, o], {})["w"].item() == 5.5
    assert set(MERGES) == {"linear", "task-arithmetic", "ties", "dare", "asymmetric"}
    assert min(s["lambda"] for s in TaskArithmetic().settings()) == 0.1


def test_tensors_missing_from_one_update_count_as_zero() -> None:
    merged = TaskArithmetic().merge([{"a": torch.ones(2)}, {"b": torch.ones(3)}], {"lambda": 1.0})
    assert merged["a"].tolist() == [1.0, 1.0] and merged["b"].tolist() == [1.0, 1.0, 1.0]
