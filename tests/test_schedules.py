import numpy as np
import pytest

import kernelfield as kf
from kernelfield import schedules
from kernelfield.tasks import integration


def test_step_schedules():
    np.testing.assert_array_equal(schedules.every(2).mask(2, 6)[0], [0, 1, 0, 1, 0, 1])
    np.testing.assert_array_equal(schedules.every(3, offset=0).mask(1, 7)[0], [1, 0, 0, 1, 0, 0, 1])
    np.testing.assert_array_equal(schedules.first(2).mask(3, 4), np.tile([1, 1, 0, 0], (3, 1)))
    np.testing.assert_array_equal(schedules.last(1).mask(1, 4)[0], [0, 0, 0, 1])
    assert schedules.all_steps().mask(2, 3).all()
    assert schedules.every(2).fraction(6) == 0.5 and schedules.first(1).fraction(4) == 0.25


def test_every_matches_integration_convention():
    full = integration(P=3, T=6, D=3, supervise_every=1, seed=0)
    np.testing.assert_array_equal(schedules.every(2).apply(full).targets,
                                  integration(P=3, T=6, D=3, supervise_every=2, seed=0).targets)


def test_random_schedule_counts_seeds_and_nesting():
    sched = schedules.random(0.5, seed=3)
    big, small = sched.mask(10, 6), sched.mask(4, 6)
    assert np.all(big.sum(axis=1) == 3)
    np.testing.assert_array_equal(big[:4], small)  # row-consistent: nested training sets
    np.testing.assert_array_equal(big, schedules.random(0.5, seed=3).mask(10, 6))
    assert not np.array_equal(big, schedules.random(0.5, seed=4).mask(10, 6))
    assert len({tuple(row) for row in big}) > 1  # different steps in different sequences


def test_held_out_and_combination():
    mask = (schedules.every(2) & schedules.held_out(2)).mask(4, 4)
    np.testing.assert_array_equal(mask, [[0, 1, 0, 1], [0, 1, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert (schedules.every(2) & schedules.held_out(2)).label == "every 2 & 2 held out"


def test_apply_keeps_truth_and_task_nans():
    task = kf.tasks.delayed_copy(P=3, T=5, D=2, delay=2, seed=0)
    out = schedules.supervise(task, schedules.every(1, offset=0) & schedules.first(3))
    assert np.all(np.isnan(out.targets[:, :2])) and np.all(~np.isnan(out.targets[:, 2]))
    assert np.all(np.isnan(out.targets[:, 3:]))
    np.testing.assert_array_equal(out.truth, task.truth)
    plain = schedules.first(1).apply(kf.Task(task.inputs, np.nan_to_num(task.targets)))
    assert type(plain) is kf.Task and plain.supervised.size == 3


def test_errors():
    task = kf.tasks.delayed_copy(P=3, T=5, D=2, delay=2, seed=0)
    with pytest.raises(ValueError, match="^schedule: first 2 leaves no supervised"):
        schedules.first(2).apply(task)
    with pytest.raises(ValueError, match="^k:"):
        schedules.every(0)
    with pytest.raises(ValueError, match="^fraction:"):
        schedules.random(1.5)
    with pytest.raises(ValueError, match="^schedule:"):
        schedules.supervise(task, "every 2")
