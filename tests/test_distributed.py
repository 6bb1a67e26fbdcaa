"""Tangent-parallel forward gradients (frogcore.distributed) and the per-tangent seeding they rest on.

The key property: two gloo processes on CPU, each evaluating its share of K = 5 tangents (3 + 2), give the
update of one process with ``seeding="per-tangent"`` and the same generator seed, for every aggregation,
weight and activity perturbation, on the FC net and on ResNet18 (BatchNorm in train mode), float64. The
processes are started by the tests themselves (``run_local``, bounded by a timeout); one spawn runs every
configuration. A rank that dies makes the other fail with a clear error instead of hanging.

``FROG_TEST_DEVICE`` (``cpu`` by default; ``cuda`` in ``benchmarks/gpu_check.py``) is the device of the
single-process tests that take one.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from frogcore.distributed import (
    LocalRunError,
    TangentParallelEngine,
    check_replicas,
    choose_gram,
    communication_volume,
    coordinate_shard,
    make_tangent_parallel_engine,
    run_local,
    tangent_shard,
)
from frogcore.engines import SEEDINGS, Engine, make_engine, tangent_seed
from frogcore.models import build_model

ROOT = Path(__file__).resolve().parents[1]
TEST_DEVICE = torch.device(os.environ.get("FROG_TEST_DEVICE", "cpu"))
K = 5
BATCH = 4
#: per-tangent chunk size in the equality tests: small, so that the ranks' coordinate slices of the
#: ``regenerate`` and ``transpose`` strategies span several chunks (FC weights: 5 chunks)
CHUNK = 256


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- configurations

def _setup(name: str):
    """A float64 model and batch (the same in every process)."""
    torch.manual_seed(0)
    if name == "fc":
        model, shape = build_model("fc", (1, 6, 6), 10, width=16).double(), (1, 6, 6)
    else:  # a narrow ResNet18 (BatchNorm in train mode), cheap on CPU
        model, shape = build_model("resnet18", (1, 8, 8), 10, width=4).double(), (1, 8, 8)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, *shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (BATCH,), generator=g)
    return model, x, y


def _cfg(model, perturbation, aggregation, gram="auto", **extra):
    return (model, perturbation, aggregation, gram, tuple(sorted(extra.items())))


CORE = [_cfg(m, p, a, g) for m in ("fc", "resnet18") for p in ("weight", "activity")
        for a, g in (("single", "auto"), ("mean", "auto"), ("sum", "auto"), ("projection", "gather"),
                     ("projection", "regenerate"), ("projection", "transpose"))]
# the FROG authors' further aggregations: n/K-weighted, and selection by d_i and ‖v_i‖
SELECTION = [_cfg("fc", p, a) for p in ("weight", "activity")
             for a in ("mean_times_dim", "max", "max_normalized", "mean_of_top_k")]
EXTRA = [
    _cfg("fc", "weight", "projection", "regenerate", tangents="per-layer"),
    # per-layer activity with K = 6: the 10-output head has 2K > n, so it falls back to gather
    _cfg("fc", "activity", "projection", "regenerate", tangents="per-layer", k=6),
    _cfg("fc", "activity", "mean", mode="sim"),
    _cfg("fc", "weight", "projection", "regenerate", mode="sim", scale=True, normalize=True, sampler="rademacher"),
    _cfg("fc", "weight", "projection", "transpose", normalize=True),
    _cfg("fc", "weight", "mean", scale=True, normalize=True),
    _cfg("fc", "activity", "single", "auto", k=2),  # one tangent per rank
]
CONFIGS = CORE + SELECTION + EXTRA


def _options(cfg):
    _, perturbation, aggregation, _, extra = cfg
    opts = dict(mode="fwd", aggregation=aggregation, k=K, perturbation=perturbation,
                generator=torch.Generator().manual_seed(3))
    opts.update(dict(extra))
    return opts


def _two_steps(model, engine, x, y):
    """Two engine steps (the second with a different step seed); returns the last loss and update."""
    for _ in range(2):
        loss = engine.step(model, F.cross_entropy, x, y)
    return loss, {n: p.grad.clone() for n, p in model.named_parameters()}


@contextlib.contextmanager
def _chunk(size):
    import frogcore.engines as engines

    before = engines.TANGENT_CHUNK
    engines.TANGENT_CHUNK = size
    try:
        yield
    finally:
        engines.TANGENT_CHUNK = before


def _distributed_worker(configs):
    """Runs in each of the two processes: every configuration, plus the failure checks that keep the group."""
    import torch.distributed as dist

    import frogcore.engines as engines

    engines.TANGENT_CHUNK = CHUNK
    out = {}
    for cfg in configs:
        model, x, y = _setup(cfg[0])
        engine = make_tangent_parallel_engine(gram=cfg[3], **_options(cfg))
        loss, grads = _two_steps(model, engine, x, y)
        out[cfg] = {"loss": loss, "grads": grads, "comm": list(engine.comm_log), "own": list(engine.own),
                    "buffers": {n: b.clone() for n, b in model.named_buffers()}}
    rank = dist.get_rank()
    model, x, y = _setup("fc")
    # ranks whose generators disagree: caught at the first step
    bad = make_tangent_parallel_engine(k=K, generator=torch.Generator().manual_seed(rank))
    try:
        bad.step(model, F.cross_entropy, x, y)
        out["seed_error"] = None
    except RuntimeError as exc:
        out["seed_error"] = str(exc)
    # k smaller than the number of processes
    try:
        make_tangent_parallel_engine(k=1)
        out["k_error"] = None
    except ValueError as exc:
        out["k_error"] = str(exc)
    check_replicas(model)  # identical replicas pass
    if rank == 1:
        with torch.no_grad():
            model.fc1.bias[0] += 1e-12
    try:
        check_replicas(model)
        out["replica_error"] = None
    except RuntimeError as exc:
        out["replica_error"] = str(exc)
    return out


@pytest.fixture(scope="module")
def distributed():
    t0 = time.monotonic()
    ranks = run_local(_distributed_worker, 2, args=(CONFIGS,), timeout_s=240, pg_timeout_s=60)
    return ranks, time.monotonic() - t0


def _reference(cfg):
    model, x, y = _setup(cfg[0])
    with _chunk(CHUNK):
        loss, grads = _two_steps(model, make_engine(seeding="per-tangent", **_options(cfg)), x, y)
    return loss, grads, dict(model.named_buffers())


def _assert_close(ref, got, rtol=1e-9):
    scale = max(g.abs().max().item() for g in ref.values())
    for n in ref:
        err = (ref[n] - got[n]).abs().max().item()
        assert err <= rtol * scale, f"{n}: max |difference| {err:.3e} (gradient scale {scale:.3e})"


# ----------------------------------------------------------------------------- the key test

@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join([*map(str, c[:4]), *(f"{k}={v}" for k, v in c[4])]))
def test_two_processes_give_the_single_process_update(distributed, cfg):
    (rank0, rank1), _ = distributed
    ref_loss, ref, ref_buffers = _reference(cfg)
    got = rank0[cfg]
    assert rank0[cfg]["own"] == list(tangent_shard(dict(cfg[4]).get("k", K), 2, 0))
    assert rank1[cfg]["own"] == list(tangent_shard(dict(cfg[4]).get("k", K), 2, 1))
    assert torch.allclose(got["loss"], ref_loss, rtol=1e-12)
    _assert_close(ref, got["grads"])
    for n in ref:  # both replicas receive the same update, bit for bit
        assert torch.equal(rank0[cfg]["grads"][n], rank1[cfg]["grads"][n]), n
    # BatchNorm running statistics: updated once per step by every replica, as in one process
    assert set(got["buffers"]) == set(ref_buffers) and (cfg[0] != "resnet18" or ref_buffers)
    for n, b in ref_buffers.items():
        assert torch.allclose(got["buffers"][n], b, rtol=1e-12, atol=1e-14), n
        assert torch.equal(got["buffers"][n], rank1[cfg]["buffers"][n]), n


def test_the_update_depends_on_every_tangent(distributed):
    """Guards the key test against a trivial pass: dropping one rank's tangents changes the update."""
    (rank0, _), _ = distributed
    cfg = _cfg("fc", "weight", "mean")
    assert cfg in CORE
    model, x, y = _setup("fc")
    with _chunk(CHUNK):
        _, fewer = _two_steps(model, make_engine(seeding="per-tangent", **dict(_options(cfg), k=3)), x, y)
    diff = max((fewer[n] * 3 / K - rank0[cfg]["grads"][n]).abs().max().item() for n in fewer)
    assert diff > 1e-6


def test_communication_matches_the_formulas(distributed):
    (rank0, _), _ = distributed
    for cfg in CORE + SELECTION:
        model, x, _ = _setup(cfg[0])
        if cfg[1] == "weight":
            n, rows = sum(p.numel() for p in model.parameters()), 1
        else:
            from frogcore.models import activity_dims

            n, rows = sum(activity_dims(model, x.shape[1:]).values()), BATCH
        with _chunk(CHUNK):
            gram = "regenerate" if cfg[3] == "auto" else cfg[3]
            want = communication_volume(cfg[2], K, n, 2, rows=rows, gram=gram)
        log = rank0[cfg]["comm"]
        assert all(name != "seed check" for name, _ in log)  # checked at the first step only
        got = {"all_reduce": sum(m for name, m in log if name.startswith("all_reduce")),
               "all_to_all": sum(m for name, m in log if name.startswith("all_to_all")),
               "gather": sum(m for name, m in log if name.startswith("gather"))}
        assert got == want, cfg


def test_clear_errors_for_disagreeing_ranks(distributed):
    (rank0, rank1), _ = distributed
    for r in (rank0, rank1):
        assert "different step seeds" in r["seed_error"] and "generator" in r["seed_error"]
        assert "k=1" in r["k_error"] and "number of processes (2)" in r["k_error"]
        assert "replicas differ" in r["replica_error"]


def _dying_worker():
    import torch.distributed as dist

    model, x, y = _setup("fc")
    engine = make_tangent_parallel_engine(aggregation="projection", k=K, generator=torch.Generator().manual_seed(3),
                                          gram="transpose")
    engine.step(model, F.cross_entropy, x, y)
    if dist.get_rank() == 1:
        os._exit(3)  # dies without a word, between two steps
    engine.step(model, F.cross_entropy, x, y)
    return "rank 0 should not get here"


def test_a_rank_that_dies_makes_the_others_fail_clearly_not_hang():
    t0 = time.monotonic()
    with pytest.raises(LocalRunError) as info:
        run_local(_dying_worker, 2, timeout_s=90, pg_timeout_s=20)
    elapsed = time.monotonic() - t0
    err = info.value
    assert err.exitcodes[1] == 3 and "without a result" in err.failures[1]
    msg = err.failures[0]
    assert "TangentParallelError" in msg and "a peer process died" in msg and "rank 0 of 2" in msg
    assert "step 2" in msg
    assert elapsed < 80  # failed, did not wait for the run's own timeout


# ----------------------------------------------------------------------------- per-tangent seeding

@settings(max_examples=40, deadline=None)
@given(k=st.integers(0, 50), world=st.integers(1, 9))
def test_tangent_shards_partition_the_indices(k, world):
    shards = [tangent_shard(k, world, r) for r in range(world)]
    assert [i for s in shards for i in s] == list(range(k))
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


@settings(max_examples=15, deadline=None)
@given(k=st.integers(1, 12), world=st.integers(1, 5), n=st.integers(1, 40), seed=st.integers(0, 2**40),
       sampler=st.sampled_from(["normal", "rademacher"]), normalize=st.booleans(), chunk=st.sampled_from([3, 16, 64]))
def test_union_of_the_shards_is_the_single_process_tangent_set(k, world, n, seed, sampler, normalize, chunk):
    like = torch.empty(0, dtype=torch.float64, device=TEST_DEVICE)
    with _chunk(chunk):
        engine = Engine(k=k, seeding="per-tangent", sampler=sampler, normalize=normalize)
        engine._step_seed = seed
        full = engine._sample_rows(n, like, 2, range(k))
        parts = torch.cat([engine._sample_rows(n, like, 2, tangent_shard(k, world, r)) for r in range(world)])
        # any whole-chunk coordinate range of any tangents can be drawn alone (unnormalised)
        raw = Engine(k=k, seeding="per-tangent", sampler=sampler)
        raw._step_seed = seed
        whole = raw._sample_block(n, like, 2, range(k), 0, n)
        start = chunk * (n // (2 * chunk))
        block = raw._sample_block(n, like, 2, range(k - 1, -1, -1), start, n)
    assert full.device.type == TEST_DEVICE.type and full.shape == (k, n)
    assert torch.equal(full, parts)
    assert torch.equal(block, whole.flip(0)[:, start:])
    if k > 1 and n > 3:
        assert not torch.equal(full[0], full[1])  # distinct tangents
    if n > 2 * chunk:
        assert not torch.equal(whole[:, :chunk], whole[:, chunk:2 * chunk])  # distinct chunks
    if normalize:
        assert torch.allclose(full.norm(dim=1), torch.ones(k, dtype=torch.float64, device=TEST_DEVICE))
    else:
        assert torch.equal(full, whole)


def test_tangent_seed_is_deterministic_distinct_and_validated():
    seeds = {tangent_seed(7, g, i) for g in range(4) for i in range(64)}
    assert len(seeds) == 256 and all(0 <= s < 2**63 for s in seeds)
    assert tangent_seed(7, 1, 2) == tangent_seed(7, 1, 2) != tangent_seed(8, 1, 2)
    for args, name in (((-1, 0, 0), "step_seed"), ((0, 1.5, 0), "group"), ((0, 0, True), "index")):
        with pytest.raises(ValueError, match=name):
            tangent_seed(*args)


def test_per_tangent_seeding_on_one_process():
    """sim and fwd see the same per-tangent tangents; the update is reproducible, differs from 'stream' and
    between steps, and runs on FROG_TEST_DEVICE."""
    model, x, y = _setup("fc")
    model, x, y = model.to(TEST_DEVICE), x.to(TEST_DEVICE), y.to(TEST_DEVICE)

    def update(mode, seeding, steps=1):
        m = copy.deepcopy(model)
        engine = make_engine(mode=mode, aggregation="projection", k=4, seeding=seeding,
                             generator=torch.Generator(device=TEST_DEVICE).manual_seed(5))
        grads = []
        for _ in range(steps):
            engine.step(m, F.cross_entropy, x, y)
            grads.append([p.grad.clone() for p in m.parameters()])
        return grads

    sim, fwd = update("sim", "per-tangent", 2), update("fwd", "per-tangent", 2)
    for a, b in zip(sim, fwd):
        _assert_close(dict(enumerate(a)), dict(enumerate(b)))
    again = update("fwd", "per-tangent")[0]
    assert all(torch.equal(a, b) for a, b in zip(fwd[0], again))
    stream = update("fwd", "stream")[0]
    assert any(not torch.allclose(a, b) for a, b in zip(fwd[0], stream))
    assert any(not torch.allclose(a, b) for a, b in zip(fwd[0], fwd[1]))


# ----------------------------------------------------------------------------- validation and rules

@pytest.mark.parametrize("kw, name", [
    (dict(mode="backprop"), "mode"), (dict(aggregation="median"), "aggregation"), (dict(k=0), "k"),
    (dict(k=2.5), "k"), (dict(perturbation="node"), "perturbation"), (dict(tangents="local"), "tangents"),
    (dict(fwd_impl="jit"), "fwd_impl"), (dict(generator=0), "generator"), (dict(scale="yes"), "scale"),
    (dict(normalize=1), "normalize"), (dict(sampler="basis"), "sampler"), (dict(chunk_size=0), "chunk_size"),
    (dict(seeding="random"), "seeding"),
])
def test_engine_constructed_directly_validates_like_make_engine(kw, name):
    with pytest.raises(ValueError, match=name):
        Engine(**kw)
    with pytest.raises(ValueError, match=name):
        make_engine(**kw)


def test_engine_normalises_integer_options_and_lists_seedings():
    e = Engine(k=np.int64(3), chunk_size=np.int32(2))
    assert type(e.k) is int and e.k == 3 and type(e.chunk_size) is int
    assert SEEDINGS == ("stream", "per-tangent") and Engine().seeding == "stream"
    assert not hasattr(Engine(), "last_impl")


@pytest.mark.parametrize("kw, match", [
    (dict(mode="bp"), "mode='bp'"), (dict(seeding="stream"), "seeding='stream'"), (dict(gram="blocks"), "gram"),
    (dict(k=0), "k"), ({}, "process group"),
])
def test_tangent_parallel_engine_validation_without_a_group(kw, match):
    with pytest.raises(ValueError, match=match):
        TangentParallelEngine(**kw)


def test_gram_rule_and_communication_formulas():
    assert choose_gram(64, 1_863_690) == "regenerate"  # FC-1024 weight tangents
    assert choose_gram(64, 2 * 1024 + 10) == "regenerate"  # FC-1024 activity tangents
    assert choose_gram(6, 12) == "regenerate" and choose_gram(7, 12) == "gather"  # 2k > n: QR territory
    n, k = 1_000_000, 64
    assert communication_volume("mean", k, n, 2) == {"all_reduce": n, "all_to_all": 0, "gather": 0}
    assert communication_volume("mean", k, n, 1)["all_reduce"] == 0
    assert communication_volume("max", k, n, 2, rows=3)["all_reduce"] == 3 * k + k + 3 * n
    assert communication_volume("projection", k, n, 2, gram="gather")["gather"] == k * n + k
    assert communication_volume("projection", 6, 10, 2, gram="regenerate")["gather"] == 6 * 10 + 6  # 2k > n
    reg = communication_volume("projection", k, n, 4, rows=3, gram="regenerate", normalize=True)
    assert reg == {"all_reduce": k * k + 3 * k + 3 * n + k, "all_to_all": 0, "gather": 0}
    with _chunk(1000):  # 1000 chunks of 1000 coordinates: 250 per rank
        tr = communication_volume("projection", k, n, 4, rows=3, gram="transpose")
    assert tr == {"all_reduce": k * k + 3 * k + 3 * n, "all_to_all": 16 * (n - n // 4), "gather": 0}
    with pytest.raises(ValueError, match="gram"):
        communication_volume("projection", k, n, 2, gram="auto")
    with pytest.raises(ValueError, match="rank"):
        tangent_shard(4, 2, 2)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 5000), world=st.integers(1, 6), chunk=st.sampled_from([1, 7, 64, 1 << 16]))
def test_coordinate_shards_are_whole_chunks_covering_the_tangent(n, world, chunk):
    with _chunk(chunk):
        shards = [coordinate_shard(n, world, r) for r in range(world)]
    assert [i for s in shards for i in s] == list(range(n))
    assert all(s.start % chunk == 0 for s in shards if len(s))


def test_run_local_validates_and_times_out():
    with pytest.raises(ValueError, match="backend"):
        run_local(print, 2, backend="mpi")
    with pytest.raises(ValueError, match="timeout_s"):
        run_local(print, 2, timeout_s=0)
    with pytest.raises(ValueError, match="world_size"):
        run_local(print, 0)


# ----------------------------------------------------------------------------- the torchrun entry point

def test_torchrun_training_matches_one_process(tmp_path):
    """``torchrun --nproc-per-node 2 -m frogcore.experiments.tangent_parallel --tangent-parallel`` trains like the
    same command in one process (same tangents, same data order)."""
    from frogcore.experiments.tangent_parallel import main

    common = ["--epochs", "2", "--limit-train", "128", "--width", "16", "--k", "4", "--threads", "1", "--quiet"]
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "frogcore.experiments.tangent_parallel",
           "--tangent-parallel", "--out", str(tmp_path / "tp.json"), *common]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = main([*common, "--out", str(tmp_path / "one.json")])
    tp = json.loads((tmp_path / "tp.json").read_text())
    assert tp["world_size"] == 2 and tp["tangent_parallel"] and single["world_size"] == 1
    assert [name for name, _ in tp["comm_per_step"]] == ["all_reduce gram+derivatives", "all_reduce estimate"]
    assert len(tp["history"]) == len(single["history"]) == 3
    for a, b in zip(tp["history"], single["history"]):
        for key in ("train_loss", "val_loss", "test_loss", "step_loss"):
            if key in a and a[key] == a[key]:  # epoch 0 has no step loss
                assert abs(a[key] - b[key]) <= 1e-5 * abs(b[key]), (key, a[key], b[key])
    assert tp["history"][-1]["train_loss"] != tp["history"][0]["train_loss"]  # it trained


def test_entry_point_refuses_tangent_parallel_without_torchrun(monkeypatch):
    from frogcore.experiments.tangent_parallel import parse_args

    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match="torchrun"):
        parse_args(["--tangent-parallel"])
    with pytest.raises(ValueError, match="k"):
        parse_args(["--k", "0"])
