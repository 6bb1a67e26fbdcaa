import math

import pytest
import torch

from frogcore.functions import FUNCTIONS, sphere
from frogcore.linalg import project
from frogcore.optimize import Run, optimize, optimize_loop, stream_seed
from frogcore.tangents import sample_tangents

F64 = torch.float64


def assert_same_run(batched, i, ref):
    """Run i of a batched result equals the one-run reference step for step."""
    a, b = batched.values[:, i], ref.values[:, 0]
    assert torch.allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True), (batched.runs[i], (a - b).abs().nanmax())
    assert batched.status[i] == ref.status[0], batched.runs[i]
    assert int(batched.steps[i]) == int(ref.steps[0]), batched.runs[i]
    assert torch.allclose(batched.x[i], ref.x[0], rtol=1e-9, atol=1e-12, equal_nan=True)


SPHERE_RUNS = [
    Run("bp", lr=0.1),
    Run("bp", lr=1.0),  # x → −x: f is constant, so early stopping ends it after exactly 50 steps
    Run("fg-mean", 1, seed=0, lr=0.02),
    Run("fg-mean", 1, seed=1, lr=1e5),  # overflows to inf long before patience runs out
    Run("fg-mean", 2, seed=0, lr=0.02, draw=8),
    Run("fg-sum", 3, seed=2, lr=0.01),
    Run("frog", 2, seed=0, lr=0.1, draw=8),  # shares its leading tangents with the fg-mean k=2 run
    Run("frog", 3, seed=1, lr=0.1),
    Run("frog", 8, seed=0, lr=0.1),  # k > n: the first n tangents (padded projection with k = 2, 3)
    Run("fg-mean", 2, seed=3, lr=0.05, sampler="angle", angle=30.0, normalize=True),
]


def test_batched_optimiser_equals_one_run_loop_step_for_step():
    n = 5
    x0 = FUNCTIONS["sphere"].start(n)
    res = optimize(sphere, x0, SPHERE_RUNS, max_steps=120, dtype=F64)
    assert set(res.status) == {"max_steps", "early_stop", "diverged"}  # every ending is exercised
    assert res.status[1] == "early_stop" and int(res.steps[1]) == 50
    assert res.status[3] == "diverged"
    for i, run in enumerate(SPHERE_RUNS):
        ref = optimize_loop(sphere, x0, run, max_steps=120, dtype=F64)
        assert_same_run(res, i, ref)


@pytest.mark.parametrize("fname,n", [("rosenbrock", 4), ("styblinski-tang", 3)])
def test_batched_equals_loop_on_nonconvex_functions(fname, n):
    fun = FUNCTIONS[fname]
    runs = [Run("bp", lr=1e-3), Run("fg-mean", 4, seed=0, lr=2e-4), Run("frog", 2, seed=1, lr=1e-3),
            Run("frog", 4, seed=0, lr=1e-3, draw=4)]
    res = optimize(fun.fn, fun.start(n), runs, max_steps=80, dtype=F64)
    for i, run in enumerate(runs):
        assert_same_run(res, i, optimize_loop(fun.fn, fun.start(n), run, max_steps=80, dtype=F64))


def scripted(values):
    """A 1-D function whose value at step t of a unit-rate run is ``values[t]``.

    Its gradient is 1 everywhere (the value part is detached from autograd and from forward mode), so
    BP with lr = 1 and FROG with k = n = 1 visit x_t = -t exactly; the value is read off a table.
    """
    table = torch.tensor(values, dtype=F64)

    def f(x):
        t = (-x[..., 0]).round().long().clamp(0, len(values) - 1)
        lin = x[..., 0]
        return lin + (table[t] - lin).detach()

    return f


RULE_RUNS = [Run("bp", lr=1.0), Run("frog", 1, seed=0, lr=1.0)]


def run_scripted(values, patience, max_steps=None):
    f = scripted(values)
    steps = max_steps or len(values) - 1
    res = optimize(f, torch.zeros(1), RULE_RUNS, max_steps=steps, patience=patience, dtype=F64)
    for i, run in enumerate(RULE_RUNS):  # the one-run reference agrees step for step
        assert_same_run(res, i, optimize_loop(f, torch.zeros(1), run, max_steps=steps, patience=patience, dtype=F64))
    return res


def test_early_stopping_counter_resets_on_every_decrease():
    # never three non-decreasing steps in a row, although the best value (10, at t = 0) is never beaten
    values = [10, 11, 12, 11.9, 12.5, 12.6, 12.4, 13, 13.5, 13.4, 14, 14.2, 14.1, 15, 15.5, 15.4, 16]
    res = run_scripted(values, patience=3)
    assert res.status == ["max_steps", "max_steps"]
    assert res.steps.tolist() == [16, 16]


def test_rise_above_best_then_slow_descent_is_not_stopped():
    values = [1.0, 5.0] + [5.0 - 0.01 * i for i in range(1, 60)]
    res = run_scripted(values, patience=5)
    assert res.status == ["max_steps", "max_steps"]
    assert float(res.best[0]) == 1.0 and int(res.best_step[0]) == 0
    assert float(res.last[0]) == pytest.approx(values[-1])


def test_a_run_that_never_decreases_stops_after_exactly_patience_steps():
    values = [3.0] * 10 + [3.0 + 0.5 * i for i in range(40)]  # flat, then rising
    for patience in (1, 4, 7):
        res = run_scripted(values, patience=patience)
        assert res.status == ["early_stop", "early_stop"]
        assert res.steps.tolist() == [patience, patience]


def test_nan_value_stops_the_run_at_once():
    values = [5.0, 4.0, 3.0, math.nan, 1.0, 0.5]
    res = run_scripted(values, patience=50)
    assert res.status == ["diverged", "diverged"]
    assert res.steps.tolist() == [3, 3]


def test_run_does_not_depend_on_the_rest_of_the_batch():
    x0 = FUNCTIONS["sphere"].start(5)
    full = optimize(sphere, x0, SPHERE_RUNS, max_steps=60, dtype=F64)
    alone = optimize(sphere, x0, [SPHERE_RUNS[7]], max_steps=60, dtype=F64)
    # equal up to rounding (the batch layout changes the order of floating-point operations)
    assert torch.allclose(full.values[:, 7], alone.values[:, 0], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("k_extra", [0, 3])
def test_frog_with_k_at_least_n_takes_exact_backprop_steps(k_extra):
    n = 4
    fun = FUNCTIONS["rosenbrock"]
    runs = [Run("bp", lr=1e-3), Run("frog", n + k_extra, seed=7, lr=1e-3), Run("frog", 2, seed=7, lr=1e-3)]
    res = optimize(fun.fn, fun.start(n), runs, max_steps=200, dtype=F64)
    assert torch.allclose(res.values[:, 1], res.values[:, 0], rtol=1e-10, atol=1e-12)
    assert torch.allclose(res.x[1], res.x[0], rtol=1e-10, atol=1e-12)
    assert not torch.allclose(res.values[:, 2], res.values[:, 0], rtol=1e-3)  # k < n does differ


def test_projection_is_invariant_to_the_fixed_angle_construction():
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(50, 6, 20, generator=gen, dtype=F64)
    g = torch.randn(20, generator=gen, dtype=F64)
    from frogcore.tangents import rotate_to_angle
    for angle in (15.0, 60.0, 90.0):
        w = rotate_to_angle(v, angle)
        assert not torch.allclose(w, v)
        assert torch.allclose(project(w @ g, w), project(v @ g, v), atol=1e-10)
    # and in optimisation: FROG runs with angle tangents follow the normal-tangent run (same raw draws)
    n = 8
    fun = FUNCTIONS["styblinski-tang"]
    runs = [Run("frog", 3, seed=2, lr=0.01)] + [Run("frog", 3, seed=2, lr=0.01, sampler="angle", angle=a)
                                                 for a in (15.0, 45.0, 90.0)]
    res = optimize(fun.fn, fun.start(n), runs, max_steps=100, patience=None, dtype=F64)
    for i in range(1, 4):
        assert torch.allclose(res.values[:, i], res.values[:, 0], rtol=1e-8)
    # FG-mean, in contrast, does see the angle
    mean = optimize(fun.fn, fun.start(n), [Run("fg-mean", 3, seed=2, lr=0.002),
                                            Run("fg-mean", 3, seed=2, lr=0.002, sampler="angle", angle=15.0)],
                    max_steps=50, patience=None, dtype=F64)
    assert not torch.allclose(mean.values[:, 0], mean.values[:, 1], rtol=1e-3)


def test_finished_runs_are_frozen_and_trajectories_repeat_the_last_value():
    x0 = FUNCTIONS["sphere"].start(5)
    res = optimize(sphere, x0, SPHERE_RUNS[:2], max_steps=100, dtype=F64, record_x=True)
    t = int(res.steps[1])
    assert res.status[1] == "early_stop"
    assert torch.all(res.values[t:, 1] == res.last[1])
    assert torch.all(res.xs[t:, 1] == res.x[1])
    assert res.best[0] == res.values[:, 0].min() and res.best_step[0] == int(res.values[:, 0].argmin())


def test_tangent_streams_are_plain_sample_tangents_calls():
    """Step t of a run uses the t-th draw of sample_tangents on its stream generator."""
    run = Run("fg-mean", 1, seed=4, lr=0.1)
    gen = torch.Generator().manual_seed(stream_seed(4, 1))
    x = FUNCTIONS["sphere"].start(3)
    expected = [sphere(x).item()]
    for _ in range(3):
        v = sample_tangents(3, 1, generator=gen, dtype=F64)[0]
        x = x - 0.1 * (v @ (2 * x)) * v
        expected.append(sphere(x).item())
    res = optimize(sphere, FUNCTIONS["sphere"].start(3), [run], max_steps=3, dtype=F64)
    assert torch.allclose(res.values[:, 0], torch.tensor(expected, dtype=F64), rtol=1e-12)
    assert stream_seed(0, 16) != stream_seed(1, 16) != stream_seed(0, 4)


def test_float32_backprop_agrees_with_float64():
    # (forward-gradient runs draw different tangents in float32 and float64: randn depends on the dtype)
    fun = FUNCTIONS["styblinski-tang"]
    a = optimize(fun.fn, fun.start(16), [Run("bp", lr=0.01)], max_steps=30, dtype="float32")
    b = optimize(fun.fn, fun.start(16), [Run("bp", lr=0.01)], max_steps=30, dtype="float64")
    assert a.values.dtype == torch.float32
    assert torch.allclose(a.values.double(), b.values, rtol=1e-5, atol=1e-4)


def test_bad_input_names_the_parameter():
    with pytest.raises(ValueError, match="approach='adam'.*allowed values: 'bp', 'fg-mean', 'fg-sum', 'frog'"):
        Run("adam", 2)
    with pytest.raises(ValueError, match="lr must be a positive"):
        Run("frog", 2, lr=-1.0)
    with pytest.raises(ValueError, match="angle"):
        Run("frog", 2, sampler="angle")
    with pytest.raises(ValueError, match="max_steps"):
        optimize(sphere, torch.zeros(3), [Run("bp")], max_steps=0)
    with pytest.raises(ValueError, match="runs must be a non-empty list"):
        optimize(sphere, torch.zeros(3), [], max_steps=3)
    with pytest.raises(ValueError, match="dtype"):
        optimize(sphere, torch.zeros(3), [Run("bp")], max_steps=3, dtype="float16")


def test_experiment_driver_smoke_tables(results_dir):
    from frogcore.experiments import frog_4_2 as cf

    res = cf.run("smoke", device="cpu", functions=["sphere", "rosenbrock"], n_grid=[2, 8],
                 approaches=["bp", "fg-mean:1", "frog:2", "frog:16"], num_seeds=2,
                 max_steps={"sphere": 60, "rosenbrock": 60}, dtype="float64",
                 lr_overrides=[{"approach": "bp", "lr": 1e-3}, {"approach": "frog", "k": 16, "lr": 1e-3}])
    runs = res["runs"]
    assert len(runs) == 2 * 2 * 4 * 2
    assert set(runs.label) == {"BP", "FG", "FROG k=2", "FROG k=16"}
    over = runs[runs.label.isin(["BP", "FROG k=16"])]
    assert (over.lr == 1e-3).all() and (over.lr_source == "override").all()
    assert (runs[runs.label == "FROG k=2"].lr_source.str.endswith("math.csv")).all()
    # with the same learning rate, FROG k=16 ≥ n takes backprop's steps
    for (f, n), d in runs.groupby(["function", "n"]):
        bp = d[d.label == "BP"].sort_values("seed")["last"].to_numpy()
        fr = d[d.label == "FROG k=16"].sort_values("seed")["last"].to_numpy()
        assert fr == pytest.approx(bp, rel=1e-8, abs=1e-12)
    assert {"median", "min", "max", "step"} <= set(res["curves"].columns)
    with pytest.raises(ValueError, match="approach='sgd'"):
        cf.run("smoke", device="cpu", approaches=["sgd:2"])
    with pytest.raises(ValueError, match="unknown parameter 'n_gird'; allowed parameters: .*n_grid"):
        cf.run("smoke", device="cpu", n_gird=[2])
