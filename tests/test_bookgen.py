"""frogcore.bookgen: the performance and tangent-parallel pages' figures and snippets come from the benchmark CSVs."""
import json
import re
import struct

import pandas as pd
import pytest

from frogcore import bookgen
from frogcore.narrative import fmt, pct

FC_PARAMS = 784 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 10 + 10

# seconds per step of a small engines table: FC-1024 only, K = 1 and 16
TIMES = {("forward", 0): 0.004, ("bp", 0): 0.012,
         ("sim", 1): 0.045, ("fwd-loop", 1): 0.028, ("fwd-vmap", 1): 0.036, ("fwd-auto", 1): 0.030,
         ("sample", 1): 0.012,
         ("sim", 16): 0.25, ("fwd-loop", 16): 0.44, ("fwd-vmap", 16): 0.37, ("fwd-auto", 16): 0.36,
         ("sample", 16): 0.19}


def engine_records(times=TIMES):
    return [dict(model="fc", label="FC-1024 (MNIST, batch 64)", batch=64, params=FC_PARAMS, perturbation="weight",
                 aggregation="projection", method=m, k=k, device="cpu", threads=1, reps=5, warmup=1, seconds=s,
                 auto_impl="vmap" if m == "fwd-auto" else None) for (m, k), s in times.items()]


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    bookgen.write_benchmark_csv(engine_records(), bookgen.benchmark_csv("engines", root), bookgen.ENGINE_COLUMNS,
                                bench="engines", threads=1, argv=["benchmarks/bench_engines.py", "--threads", "1"])
    return root


def snippets(book):
    folder = book / bookgen.GENERATED / "performance"
    return {p.name: p.read_text() for p in sorted(folder.glob("*.md"))}


def png_dpi(path):
    """Pixels per inch from a PNG's pHYs chunk (None without one)."""
    data = path.read_bytes()
    i = data.find(b"pHYs")
    if i < 0:
        return None
    ppu_x, _, unit = struct.unpack(">IIB", data[i + 4:i + 13])
    return ppu_x * 0.0254 if unit == 1 else None


def test_write_benchmark_csv_writes_a_tidy_table_and_its_run_description(results):
    path = bookgen.benchmark_csv("engines", results)
    df = pd.read_csv(path)
    assert list(df.columns) == list(bookgen.ENGINE_COLUMNS) and len(df) == len(TIMES)
    meta = json.loads(path.with_name("engines.meta.json").read_text())
    for key in ("date", "machine", "torch", "threads", "command", "git_commit"):
        assert key in meta, key
    assert meta["machine"]["cores"] and meta["machine"]["platform"]
    assert meta["threads"] == 1 and meta["command"].startswith("python benchmarks/bench_engines.py --threads 1")


def test_write_all_writes_the_performance_figures_and_snippets(tmp_path, results):
    book = tmp_path / "book"
    written = bookgen.write_all(book, "default", "cpu", results=results)
    folder = book / bookgen.GENERATED / "performance"
    pngs = sorted(p.name for p in folder.glob("*.png"))
    assert pngs == ["engines_batching.png", "engines_cost.png", "engines_sampling.png"]
    for name in pngs:
        assert folder / name in written
        assert png_dpi(folder / name) >= 150
    md = snippets(book)
    for name in ("fig_cost.md", "fig_batching.md", "fig_sampling.md"):
        text = md[name]
        png = re.search(r"```\{figure\} (\S+)", text).group(1)
        assert (book / png).is_file()
        assert re.search(r"^:alt: .{40,}", text, re.M) and re.search(r"^:name: fig-", text, re.M)
        # provenance: the CSV, its date and the machine from the meta.json
        meta = json.loads((results / "benchmarks" / "engines" / "engines.meta.json").read_text())
        assert "`results/benchmarks/engines/engines.csv`" in text and meta["date"][:10] in text
        assert "/tmp" not in text and str(tmp_path) not in text
    for name in ("key_findings.md", "setup.md", "tables.md", "batching.md", "sampling.md"):
        assert md[name].strip(), name
    # the tangent-parallel page gets a note: no distributed table here
    note = (book / bookgen.GENERATED / "tangent_parallel" / "measured.md").read_text()
    assert "bench_distributed.py" in note


def test_tables_have_at_most_seven_columns(tmp_path, results):
    bookgen.write_performance(tmp_path / "book", results)
    for name, text in snippets(tmp_path / "book").items():
        for line in text.splitlines():
            if line.startswith("|"):
                assert line.count("|") - 1 <= 7, (name, line)


def test_numbers_in_the_snippets_come_from_the_csv(tmp_path, results):
    book = tmp_path / "book"
    bookgen.write_performance(book, results)
    md = snippets(book)
    t = TIMES
    # FC-1024 fwd-vmap at K = 16 as a multiple of a forward pass and of a backprop step
    assert fmt(t["fwd-vmap", 16] / t["forward", 0]) in md["key_findings.md"]
    assert fmt(t["fwd-vmap", 16] / t["bp", 0]) in md["key_findings.md"]
    assert pct(t["sample", 16] / t["fwd-auto", 16], 2) in md["key_findings.md"]
    assert fmt(t["fwd-loop", 16] / t["fwd-vmap", 16]) in md["batching.md"]
    assert fmt(FC_PARAMS) in md["setup.md"] and fmt(16 * FC_PARAMS) in md["sampling.md"]
    assert f"| sim | {fmt(t['sim', 1])} | {fmt(t['sim', 16])} |" in md["tables.md"]

    # change one measurement: the sentences and tables that use it change, nothing else is stale
    times = dict(TIMES)
    times["fwd-vmap", 16] = 0.5
    bookgen.write_benchmark_csv(engine_records(times), bookgen.benchmark_csv("engines", results),
                                bookgen.ENGINE_COLUMNS, bench="engines", threads=1)
    bookgen.write_performance(book, results)
    new = snippets(book)
    assert fmt(0.5 / t["forward", 0]) in new["key_findings.md"]
    assert fmt(t["fwd-vmap", 16] / t["forward", 0]) not in new["key_findings.md"]
    assert fmt(t["fwd-loop", 16] / 0.5) in new["batching.md"]
    assert "| fwd-vmap | " + fmt(t["fwd-vmap", 1]) + " | 0.5 |" in new["tables.md"]
    assert new["setup.md"] == md["setup.md"]


def test_a_missing_csv_gives_a_note_not_a_crash(tmp_path):
    book = tmp_path / "book"
    written = bookgen.write_all(book, "default", "cpu", results=tmp_path / "empty")
    md = snippets(book)
    assert "No measurements to show here" in md["key_findings.md"]
    assert "python benchmarks/bench_engines.py --threads 1 --out results/benchmarks/engines/engines.csv" in \
        md["key_findings.md"]
    assert "bench_reference.py" in md["reference.md"]
    assert md["fig_cost.md"] == "" and not list((book / bookgen.GENERATED / "performance").glob("*.png"))
    assert all(p.exists() for p in written)
    tp = (book / bookgen.GENERATED / "tangent_parallel" / "measured.md").read_text()
    assert "No measurements to show here" in tp and "bench_distributed.py" in tp


def test_a_csv_without_a_needed_column_gives_a_note(tmp_path):
    root = tmp_path / "results"
    path = bookgen.benchmark_csv("engines", root)
    path.parent.mkdir(parents=True)
    path.write_text("model,method\nfc,bp\n")
    bookgen.write_performance(tmp_path / "book", root)
    text = snippets(tmp_path / "book")["key_findings.md"]
    assert "has no column(s) k, seconds" in text


def test_the_distributed_table_is_generated_from_its_csv(tmp_path):
    root = tmp_path / "results"
    recs = [dict(device="cpu", width=1024, batch=64, perturbation="weight", aggregation="projection", k=64, world=w,
                 engine=e, gram=g, threads=1, reps=5, warmup=1, seconds=s, speedup=sp, efficiency=ef)
            for w, e, g, s, sp, ef in ((1, "stream", "-", 1.0, 1.0, 1.0), (2, "tangent-parallel", "regenerate",
                                                                           0.625, 1.6, 0.8))]
    bookgen.write_benchmark_csv(recs, bookgen.benchmark_csv("distributed", root), ["device", "k", "world", "engine",
                                "gram", "seconds", "speedup", "efficiency", "aggregation"], bench="distributed")
    bookgen.write_tangent_parallel(tmp_path / "book", root)
    text = (tmp_path / "book" / bookgen.GENERATED / "tangent_parallel" / "measured.md").read_text()
    assert "1.6 times as fast" in text and "efficiency 0.8" in text and "| 0.625 |" in text
    assert "`results/benchmarks/distributed/distributed.csv`" in text
