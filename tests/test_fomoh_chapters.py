"""The FoMoH chapters: fomoh_rosenbrock, fomoh_subspace, fomoh_networks (and their shared optimisation loop)."""
import math

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from frogcore.approach import Approach
from frogcore.experiments import fomoh_networks as NET
from frogcore.experiments import fomoh_rosenbrock as ROS
from frogcore.experiments import fomoh_subspace as SUB
from frogcore.experiments.common.fomoh import best_index, optimise, start_points, tangent_generators
from frogcore.functions import (
    QUADRATIC_COND,
    STYBLINSKI_TANG_ARGMIN,
    STYBLINSKI_TANG_MIN_PER_DIM,
    STYBLINSKI_TANG_MIN_PER_DIM_EXACT,
    quadratic,
    rosenbrock,
)

# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("call, match", [
    (lambda: ROS.run_rosenbrock_2d(profile="huge"), "profile"),
    (lambda: ROS.run_rosenbrock_2d("smoke", "cpu", approaches=["adam"]), "approaches"),
    (lambda: ROS.run_rosenbrock_2d("smoke", "cpu", approaches=["fgd", "frog:2"]), "lrs must .* 'frog'"),
    (lambda: ROS.run_rosenbrock_2d("smoke", "cpu", lrs={"fgd": -1.0, "fomoh": 1.0, "fomoh-kd": 1.0}),
     r"lrs\['fgd'\]"),
    (lambda: ROS.run_rosenbrock_nd(profile="smoke", learning_rate=1.0), "unknown parameter 'learning_rate'"),
    (lambda: ROS.run_rosenbrock_nd(profile="smoke", n5_ks=[6]), "n5_ks"),
    (lambda: ROS.run_rosenbrock_nd(profile="smoke", frog_lrs=[]), "frog_lrs"),
    (lambda: NET.run(profile="smoke", approaches=["adam"]), "approaches"),
    (lambda: NET.run(profile="smoke", approaches=["frog:2"]), "approaches"),
    (lambda: NET.run(profile="smoke", models=["mlp"]), "models"),
    (lambda: NET.run(profile="smoke", steps={"cnn": 3}), "steps"),
    (lambda: NET.run(profile="smoke", lrs={"logreg": {"bp": 0.1}}), "lrs must give a learning rate"),
    (lambda: SUB.run(profile="smoke", device="tpu"), "device"),
    (lambda: SUB.run(profile="smoke", k=21), "k must be <= n"),
    (lambda: SUB.run(profile="smoke", dampings=[-1.0]), r"dampings\[0\]"),
    (lambda: SUB.run(profile="smoke", problems=["styblinski_tang"]), "problems"),
    (lambda: SUB.run(profile="smoke", curvatures=["flip"]), "curvatures"),
])
def test_chapters_validate_their_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_experiment_names_and_sections():
    assert set(ROS.CHAPTER.experiments) == {"rosenbrock_2d", "rosenbrock_nd"}
    assert set(SUB.CHAPTER.experiments) == {"damping_sweep"}
    assert set(NET.CHAPTER.experiments) == {"networks"}
    assert [c.section for c in (ROS.CHAPTER, SUB.CHAPTER, NET.CHAPTER)] == [
        "fomoh_rosenbrock", "fomoh_subspace", "fomoh_networks"]
    # approaches are normalised to their canonical spelling
    assert NET.CHAPTER.params("networks", "smoke", approaches=["fomoh-kd3", ["fomoh-kd", 2]])["approaches"] == [
        "fomoh-kd:3", "fomoh-kd:2"]


# ----------------------------------------------------------------------------- test functions


def test_styblinski_tang_gap_uses_the_exact_minimum():
    f, start, fmin = SUB.problem("styblinski-tang", 20)
    assert fmin == STYBLINSKI_TANG_MIN_PER_DIM_EXACT * 20
    gap = float(f(torch.full((20,), STYBLINSKI_TANG_ARGMIN, dtype=torch.float64)) - fmin)
    assert 0.0 <= gap < 1e-10  # the rounded −39.16599·n would give −3.5e-3
    assert float(f(torch.full((20,), STYBLINSKI_TANG_ARGMIN, dtype=torch.float64))) < STYBLINSKI_TANG_MIN_PER_DIM * 20
    assert torch.equal(start, torch.zeros(20, dtype=torch.float64))
    f, start, fmin = SUB.problem("rosenbrock", 5)
    assert fmin == 0.0 and start.tolist() == [-1.0, 0.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="problem='sphere'"):
        SUB.problem("sphere", 3)


def test_quadratic_is_half_x_diag_lambda_x():
    x = torch.randn(3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    lam = torch.tensor([QUADRATIC_COND ** (i / 6) for i in range(7)], dtype=torch.float64)
    torch.testing.assert_close(quadratic(x), 0.5 * (lam * x * x).sum(-1))
    H = torch.func.hessian(quadratic)(x[0])
    torch.testing.assert_close(H, torch.diag(lam))
    assert float(quadratic(torch.ones(1, dtype=torch.float64))) == 0.5  # λ = 1 for n = 1
    torch.testing.assert_close(quadratic(x, cond=1), 0.5 * (x * x).sum(-1))
    for bad in (0.5, float("inf"), "big", True):
        with pytest.raises(ValueError, match="cond"):
            quadratic(x, cond=bad)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 12), st.floats(1.0, 1e6))
def test_quadratic_is_nonnegative_and_zero_only_at_the_origin(n, cond):
    x = torch.randn(4, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    assert bool((quadratic(x, cond) > 0).all())
    assert float(quadratic(torch.zeros(n, dtype=torch.float64), cond)) == 0.0


# ----------------------------------------------------------------------------- the shared loop


def test_start_points_and_runs_do_not_depend_on_the_number_of_seeds():
    a = start_points(0, "t", 5, 2)
    b = start_points(0, "t", 5, 4)
    assert torch.equal(a, b[:2]) and not torch.equal(b[0], b[1])
    assert not torch.equal(start_points(1, "t", 5, 2), a)
    ta = optimise(rosenbrock, a, "fomoh-kd:3", 6, generators=tangent_generators(0, "t", seeds=2))
    tb = optimise(rosenbrock, b, "fomoh-kd:3", 6, generators=tangent_generators(0, "t", seeds=4))
    assert torch.equal(ta.points[-1], tb.points[-1][:2])


def test_a_sweep_shares_the_tangents_of_its_seed():
    """Every learning rate of a FROG sweep sees the tangents of its seed: each slice is the single run."""
    x0 = start_points(3, "t", 6, 3)
    lrs = torch.tensor([1e-4, 1e-3], dtype=torch.float64)[:, None]
    sweep = optimise(rosenbrock, x0.expand(2, 3, 6), "frog:2", 5, generators=tangent_generators(3, "s", seeds=3),
                     lr=lrs)
    for i, lr in enumerate(lrs[:, 0].tolist()):
        one = optimise(rosenbrock, x0, "frog:2", 5, generators=tangent_generators(3, "s", seeds=3), lr=lr)
        torch.testing.assert_close(sweep.points[-1][i], one.points[-1], rtol=1e-12, atol=1e-12)


def test_fomoh_kd_with_k_equal_n_on_a_quadratic_is_newton():
    """K = n tangents span R^n: one step with η = 1 lands on the minimiser of a quadratic."""
    x0 = start_points(0, "q", 4, 3)
    traj = optimise(quadratic, x0, Approach("fomoh-kd", 4), 1, generators=tangent_generators(0, "q", seeds=3))
    assert float(traj.points[-1].abs().max()) < 1e-8
    assert traj.status == {"ok": 3, "jitter": 0, "failed": 0}
    assert traj.iterations == [0, 1]


def test_optimise_logs_and_validates():
    x0 = start_points(0, "t", 2, 1)
    traj = optimise(rosenbrock, x0, "fgd", 7, generators=tangent_generators(0, "t", seeds=1), lr=1e-4, log_every=3)
    assert traj.iterations == [0, 3, 6, 7] and len(traj.points) == 4
    assert traj.status == {"ok": 0, "jitter": 0, "failed": 0}  # FGD solves no system
    with pytest.raises(ValueError, match="fg-mean"):
        optimise(rosenbrock, x0, "fg-mean:2", 1, generators=tangent_generators(0, "t", seeds=1))
    with pytest.raises(ValueError, match="S = len"):
        optimise(rosenbrock, x0, "fgd", 1, generators=tangent_generators(0, "t", seeds=2))


def test_best_index_ignores_nonfinite_values():
    final = torch.tensor([[float("nan"), float("nan"), 0.0], [1.0, 1.0, 1.0], [0.5, float("inf"), 0.5]])
    assert best_index(final) == 2  # medians: inf (nan counts as inf), 1, 0.5
    assert best_index(final[:2]) == 1


# ----------------------------------------------------------------------------- rosenbrock chapter


def test_rosenbrock_2d_smoke():
    res = ROS.run_rosenbrock_2d("smoke", "cpu")
    traj, status = res["trajectory"], res["status"]
    assert list(dict.fromkeys(traj.label)) == ["FGD", "FoMoH", "FoMoH-KD K=2"]
    assert list(status.approach) == ["fgd", "fomoh", "fomoh-kd:2"]
    its = ROS.PROFILES_2D["smoke"]["iterations"]
    seeds = ROS.PROFILES_2D["smoke"]["seeds"]
    assert len(traj) == 3 * seeds * (its + 1)
    counts = status.set_index("approach")[["ok", "jitter", "failed"]].sum(axis=1)
    assert counts.to_dict() == {"fgd": 0, "fomoh": its * seeds, "fomoh-kd:2": its * seeds}
    last = traj[traj.iteration == its].groupby("approach").loss.max()
    assert last["fomoh-kd:2"] < 1e-10  # K = n = 2: Newton's method
    first = traj[traj.iteration == 0]
    # every approach starts from the same points, and the loss column is Rosenbrock of (x1, x2)
    assert first.groupby("seed").x1.nunique().eq(1).all()
    x = torch.tensor(traj[["x1", "x2"]].to_numpy())
    torch.testing.assert_close(rosenbrock(x).numpy(), traj.loss.to_numpy(), check_dtype=False)


def test_rosenbrock_2d_is_bit_identical_between_runs_and_seeds_matter():
    a = ROS.CHAPTER.experiment("rosenbrock_2d").compute(ROS.CHAPTER.params("rosenbrock_2d", "smoke", iterations=5),
                                                          torch.device("cpu"), 0)
    b = ROS.CHAPTER.experiment("rosenbrock_2d").compute(ROS.CHAPTER.params("rosenbrock_2d", "smoke", iterations=5),
                                                          torch.device("cpu"), 0)
    c = ROS.CHAPTER.experiment("rosenbrock_2d").compute(ROS.CHAPTER.params("rosenbrock_2d", "smoke", iterations=5),
                                                          torch.device("cpu"), 1)
    for t in a:
        pd.testing.assert_frame_equal(a[t], b[t], check_exact=True)
    assert not a["trajectory"].x1.equals(c["trajectory"].x1)


def test_rosenbrock_nd_smoke():
    res = ROS.run_rosenbrock_nd("smoke", "cpu")
    curves, sweep, status = res["curves"], res["frog_lr"], res["status"]
    p = ROS.PROFILES_ND["smoke"]
    assert set(curves.label) == {"FoMoH-KD K=1", "FoMoH-KD K=5", "FoMoH-KD K=2", "FoMoH-KD K=10", "Newton",
                                 "FROG k=1", "FROG k=5", "FROG k=2", "FROG k=10"}
    assert set(status.label) == {"FoMoH-KD K=1", "FoMoH-KD K=5", "FoMoH-KD K=2", "FoMoH-KD K=10", "Newton"}
    # exactly one chosen FROG learning rate per (n, K), the one with the lowest median final loss
    for (n, k), d in sweep.groupby(["n", "k"]):
        assert d.chosen.sum() == 1
        chosen = d[d.chosen].iloc[0]
        assert chosen.median_final_loss == d.median_final_loss.min()
        used = curves[(curves.n == n) & (curves.approach == f"frog:{k}")].lr.unique()
        assert list(used) == [chosen.lr]
    assert len(sweep) == len(p["frog_lrs"]) * (len(p["n5_ks"]) + len(p["n10_ks"]))
    # the curves' last FROG losses reproduce the sweep's chosen medians
    last = curves[(curves.approach == "frog:5") & (curves.iteration == p["n5_iterations"])]
    assert last.loss.median() == pytest.approx(sweep[(sweep.n == 5) & (sweep.k == 5) & sweep.chosen]
                                                .median_final_loss.iloc[0])
    # FoMoH-KD with K = 5 = n is Newton in a random basis: it converges on 5-D Rosenbrock
    kd5 = curves[(curves.approach == "fomoh-kd:5") & (curves.iteration == p["n5_iterations"])]
    assert kd5.loss.max() < 1e-6
    assert set(curves.iteration) == {0, 5, 10, 15, 20}


def test_hyperdual_sin_gives_value_and_two_derivatives():
    t = ROS.hyperdual_sin(50)
    x = torch.tensor(t.x.to_numpy())
    torch.testing.assert_close(torch.tensor(t.primal.to_numpy()), torch.sin(x))
    torch.testing.assert_close(torch.tensor(t.eps1.to_numpy()), torch.cos(x))
    torch.testing.assert_close(torch.tensor(t.eps12.to_numpy()), -torch.sin(x))


# ----------------------------------------------------------------------------- subspace chapter


def test_subspace_smoke():
    res = SUB.run("smoke", "cpu", problems=["quadratic", "styblinski-tang"], iterations=5)
    sweep, curves = res["sweep"], res["curves"]
    p = SUB.PROFILES["smoke"]
    per_problem = (len(p["dampings"]) * len(p["curvatures"]) + len(p["frog_lrs"])) * p["seeds"]
    assert sweep.groupby("problem").size().to_dict() == {"quadratic": per_problem, "styblinski-tang": per_problem}
    assert set(sweep.label) == {"FoMoH-KD K=3", "FROG k=3"}
    assert (sweep.final_gap >= 0).all()  # the exact minimum: no negative gaps
    frog = sweep[sweep.variant == "frog"]
    assert frog.damping.isna().all() and sorted(frog.lr.unique()) == p["frog_lrs"]
    assert set(curves.which) == {"mu=0", "best"}
    # iteration-0 gap is f(start) − f*: ½ Σ λ_i on the quadratic, 39.166·n on Styblinski-Tang
    g0 = curves[curves.iteration == 0].groupby("problem").median_gap.first()
    lam = torch.logspace(0, 4, 20, dtype=torch.float64)
    assert g0["quadratic"] == pytest.approx(0.5 * float(lam.sum()))
    assert g0["styblinski-tang"] == pytest.approx(-STYBLINSKI_TANG_MIN_PER_DIM_EXACT * 20)


def test_damping_zero_is_fomoh_kd_and_the_sweep_shares_tangents():
    """μ = 0 of the damped sweep is plain FoMoH-KD (Hessian metric) with the same tangents."""
    p = SUB.CHAPTER.params("damping_sweep", "smoke", problems=["rosenbrock"], iterations=4, dampings=[0.0, 10.0])
    res = SUB.compute(p, torch.device("cpu"), 0)["sweep"]
    f, start, fmin = SUB.problem("rosenbrock", p["n"])
    x0 = start.expand(p["seeds"], p["n"])
    gens = tangent_generators(0, "fomoh_subspace", "rosenbrock", seeds=p["seeds"])
    plain = optimise(f, x0, Approach("fomoh-kd", p["k"]), 4, generators=gens)
    expected = (f(plain.points[-1]) - fmin).tolist()
    got = res[(res.variant == "damped") & (res.damping == 0.0)].sort_values("seed").final_gap.tolist()
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_identity_metric_is_the_projection():
    assert SUB.identity_metric_check() < 1e-12


# ----------------------------------------------------------------------------- networks chapter


def test_networks_smoke_tables():
    res = NET.run("smoke", "cpu", approaches=["bp", "fomoh", "fomoh-kd2"], steps={"logreg": 6}, eval_every=3)
    curves, params, timing = res["curves"], res["params"], res["timing"]
    assert params.to_dict("records") == [{"model": "logreg", "input_shape": "1x8x8", "parameters": 650}]
    assert list(timing.label) == ["BP", "FoMoH", "FoMoH-KD K=2"]
    assert (timing.step_over_forward > 0).all()
    assert set(curves.step) == {0, 3, 6}
    assert set(curves.split) == {"val", "test", "train_batch"}
    # the same initial weights for every approach of a training seed (common random numbers)
    start = curves[(curves.step == 0) & (curves.split == "val")]
    assert start.loss.nunique() == 1
    end = curves[(curves.step == 6) & (curves.split == "val")].set_index("approach").loss
    assert end["bp"] < start.loss.iloc[0]  # training does something


def test_networks_curves_are_bit_identical_between_runs():
    kw = dict(approaches=["fomoh-kd:2"], steps={"logreg": 4}, timing_repeats=1)
    a = NET.run("smoke", "cpu", force=True, **kw)
    b = NET.run("smoke", "cpu", force=True, **kw)
    c = NET.run("smoke", "cpu", seed=1, force=True, **kw)
    assert not (a.cached or b.cached)
    pd.testing.assert_frame_equal(a["curves"], b["curves"], check_exact=True)
    pd.testing.assert_frame_equal(a["params"], b["params"], check_exact=True)
    assert not a["curves"].loss.equals(c["curves"].loss)


def test_download_flag_reaches_the_data_loader_and_is_not_a_parameter(monkeypatch):
    calls = []
    real = NET.load_splits

    def spy(name, **kw):
        calls.append((name, kw.get("download")))
        return real(name, seed=kw.get("seed", 0))

    monkeypatch.setattr(NET, "load_splits", spy)
    kw = dict(models=["logreg"], approaches=["bp"], steps={"logreg": 2})
    a = NET.run("smoke", "cpu", force=True, download=True, **kw)
    b = NET.run("smoke", "cpu", **kw)  # download=False: the same stored result
    assert calls == [("digits", True)] and b.cached and a.meta["params"] == b.meta["params"]
    assert "download" not in a.meta["params"]
    for bad in ("yes", 1):
        with pytest.raises(ValueError, match="download must be True or False"):
            NET.run("smoke", "cpu", download=bad, **kw)


def test_training_bp_step_is_sgd():
    """One BP step of the chapter's training (frogcore.fomoh_training.train with the chapter's model builder)
    equals one SGD step on the first minibatch of the data stream."""
    from frogcore.datasets import load_splits
    from frogcore.fomoh_training import train
    from frogcore.hyperdual import module_loss, module_params

    splits = load_splits("digits", seed=0)
    res = train("logreg", "bp", splits, steps=1, batch=64, lr=0.5, init_seed=1, data_seed=2, tangent_seed=3,
                eval_every=1, device=torch.device("cpu"))
    df = res.history
    assert len(res.times) == 1 and res.status == "completed"
    model = NET.build_network("logreg", splits, 1)
    idx = torch.randperm(splits.train[0].shape[0], generator=torch.Generator().manual_seed(2))[:64]
    x, y = splits.train[0][idx], splits.train[1][idx]
    loss_fn = module_loss(model, torch.nn.functional.cross_entropy, x, y)
    params = module_params(model)
    grads = torch.func.grad(loss_fn)(params)
    stepped = {k: v - 0.5 * grads[k] for k, v in params.items()}
    xv, yv = splits.val
    with torch.no_grad():
        out = torch.func.functional_call(model, stepped, (xv,))
    expected = float(torch.nn.functional.cross_entropy(out, yv))
    row = df[(df.step == 1) & (df.split == "val")].iloc[0]
    assert row.loss == pytest.approx(expected, rel=1e-6)
    assert df[(df.step == 1) & (df.split == "train_batch")].loss.iloc[0] == pytest.approx(float(loss_fn(params)))
    assert math.isnan(df[df.split == "train_batch"].accuracy.iloc[0])


def test_closed_form_chapters_do_not_depend_on_network_code():
    """The code hash of the Rosenbrock and subspace chapters covers only what their computations import:
    an edit to the datasets or the models must not invalidate their results."""
    from frogcore.results import module_closure

    for chapter in (ROS.CHAPTER, SUB.CHAPTER):
        closure = module_closure([chapter.module])
        assert "frogcore.experiments.common.fomoh" in closure and "frogcore.second_order" in closure
        assert not [m for m in closure if m.startswith(("frogcore.datasets", "frogcore.models", "frogcore.training"))]
    assert "frogcore.datasets" in module_closure([NET.CHAPTER.module])


def test_networks_paper_profile_uses_the_authors_seeds_per_model():
    from frogcore.experiments import fomoh_networks

    p = fomoh_networks.CHAPTER.params("networks", "paper")
    assert p["seeds"] == {"logreg": [0, 1, 2, 3, 4], "cnn": [0, 1, 3]}  # the authors' setups (shared/reference)
    assert fomoh_networks.CHAPTER.params("networks", "smoke")["seeds"] == {"logreg": [0]}
    with pytest.raises(ValueError, match="seeds must give the training seeds of every model; missing 'cnn'"):
        fomoh_networks.CHAPTER.params("networks", "paper", seeds={"logreg": [0]})
