"""Every notebook in notebooks/: stored clean, parameterised, and executing at the smoke profile."""
import json

import nbformat
import pytest

from frogcore.pipeline import NOTEBOOK_DIR, execute_notebook, list_notebooks

NOTEBOOKS = [p.name for p in list_notebooks()]


def test_there_are_notebooks():
    assert "frog_4_1.ipynb" in NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_module_and_results_share_one_name(name):
    """notebooks/X.ipynb calls exactly one chapter module, frogcore.experiments.X, and computes nothing itself."""
    import ast
    import importlib

    stem = name.removesuffix(".ipynb")
    module = importlib.import_module(f"frogcore.experiments.{stem}")
    assert module.CHAPTER.section == stem  # results/X/
    nb = json.loads((NOTEBOOK_DIR / name).read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    tree = ast.parse(code)
    chapters = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "frogcore.experiments":
            chapters.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("frogcore.experiments."):
            chapters.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            chapters.update(a.name.split(".")[2] for a in node.names if a.name.startswith("frogcore.experiments."))
    assert chapters == {stem}, f"{name} must call exactly frogcore.experiments.{stem}; it uses {sorted(chapters)}"
    forbidden = {"run_cached", "compute"}
    defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not (forbidden & (defined | names)), f"{name} computes results itself ({forbidden & (defined | names)})"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_clean_and_parameterised(name):
    nb = json.loads((NOTEBOOK_DIR / name).read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "stored outputs"
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    src = "".join(params[0]["source"])
    assert 'device = "auto"' in src and 'profile = "default"' in src and "seed = " in src
    everything = "".join("".join(c["source"]) for c in nb["cells"])
    assert 'matplotlib.use("Agg")' not in everything and "matplotlib.use('Agg')" not in everything


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_at_smoke_profile_and_shows_figures(name, executed_book):
    """Every figure a chapter shows is a numbered, captioned <figure> with alt text and an embedded PNG
    (frogcore.style.figure_html); no bare image output (it would reach the book without a caption)."""
    import re

    _, executed, errors = executed_book
    if errors[name] is not None:
        raise errors[name]
    nb = nbformat.read(executed[name], as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    bare = [o for o in outputs if "image/png" in o.get("data", {})]
    assert not bare, f"{len(bare)} figure(s) shown without a caption (display them with style.figure_html)"
    figures = [o["data"]["text/html"] for o in outputs if "<figure" in str(o.get("data", {}).get("text/html", ""))]
    assert figures, "the executed notebook displays no figure"
    for html in figures:
        html = "".join(html) if isinstance(html, list) else html
        assert "data:image/png;base64," in html
        assert re.search(r'alt="[^"]{10,}"', html), "a figure without alt text"
        caption = re.search(r"<figcaption[^>]*>(.*?)</figcaption>", html, re.S)
        assert caption and re.search(r"Figure \d+\.", caption.group(1)), "a figure without a numbered caption"
        assert "Data: " in caption.group(1) and "profile smoke" in caption.group(1), "a caption without provenance"
    errors_out = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors_out


@pytest.mark.slow
@pytest.mark.parametrize("override, match", [
    ({"profile": "huge"}, r"profile='huge' is not valid; allowed values: 'smoke', 'default', 'paper'"),
    ({"device": "tpu"}, r"device='tpu' is not valid; allowed values: 'auto', 'cpu', 'cuda'"),
])
def test_bad_notebook_parameters_fail_with_a_clear_message(override, match, tmp_path):
    import papermill as pm

    # the override reaches the notebook's parameters cell; the notebook itself must reject it
    with pytest.raises(pm.PapermillExecutionError, match=match):
        execute_notebook(NOTEBOOK_DIR / "frog_4_1.ipynb", tmp_path / "out.ipynb",
                         profile="smoke", device="cpu", parameters=override)
