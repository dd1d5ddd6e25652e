"""The benchmark's training loop: distillation from the trained baseline (``--distill``)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmarks.train import distill_loss, fit
from benchmarks.workloads.base import Data, Spec


def _spec(task: str) -> Spec:
    return Spec(name="t", title="t", proxy="t", task=task, metric="r2", epochs=1, batch_size=8,
                lr=1e-2, budget=0.5, paper_model="FCs", bench_batch=8, quick_epochs=1)


@pytest.mark.parametrize("task", ["regression", "classification", "segmentation"])
def test_distill_loss_is_zero_only_when_the_student_matches_the_teacher(task):
    torch.manual_seed(0)
    teacher = torch.randn(6, 4)
    assert distill_loss(_spec(task), teacher.clone(), teacher).item() == pytest.approx(
        0.0 if task != "segmentation" else
        torch.nn.functional.binary_cross_entropy_with_logits(teacher, torch.sigmoid(teacher)).item(),
        abs=1e-6)
    assert distill_loss(_spec(task), teacher + torch.randn(6, 4), teacher) > distill_loss(
        _spec(task), teacher.clone(), teacher)


def test_fit_with_a_teacher_pulls_the_student_towards_it_and_leaves_the_teacher_alone():
    torch.manual_seed(0)
    x = torch.randn(64, 3)
    data = Data(x_train=x, y_train=torch.zeros(64, 1), x_val=x[:8], y_val=torch.zeros(8, 1),
                x_test=x[:8], y_test=torch.zeros(8, 1))
    teacher = nn.Linear(3, 1)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = nn.Linear(3, 1)
    fit(_spec("regression"), student, data, 40, teacher=teacher)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not teacher.training
    # half the loss pulls towards the labels (0), half towards the teacher: the minimum of
    # 0.5 y^2 + 0.5 (y - t)^2 is y = t / 2
    with torch.no_grad():
        torch.testing.assert_close(student(x), teacher(x) / 2, atol=2e-2, rtol=0)
