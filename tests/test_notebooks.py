"""The notebooks: jupytext percent files that open with a markdown cell, have a parameters cell, import the library,
end with cells that assert their claims, and run at small size (ADPM_NB_SIZE=small, MPLBACKEND=Agg) without writing
any file. Each registry result names the notebook that shows it, in that notebook's header cell."""

import ast
import pathlib
import re
import runpy

import jupytext
import matplotlib
import pytest

import theory

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.py"))
NAME = re.compile(r"^(\d\d)_[a-z0-9_]+\.py$")


def _code(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_notebooks_are_numbered_and_linked_from_the_registry():
    assert len(NOTEBOOKS) >= 6, NOTEBOOKS
    numbers = []
    for path in NOTEBOOKS:
        m = NAME.match(path.name)
        assert m, f"{path.name}: notebooks are named NN_topic.py"
        numbers.append(m.group(1))
    assert len(numbers) == len(set(numbers)), numbers
    linked = {r.notebook for r in theory.RESULTS if r.notebook is not None}
    assert linked <= {f"notebooks/{p.name}" for p in NOTEBOOKS}, linked


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_percent_format_with_header_parameters_and_asserts(path):
    text = path.read_text(encoding="utf-8")
    assert jupytext.formats.guess_format(text, ".py")[0] == "percent", f"{path.name} is not in percent format"
    nb = jupytext.read(path)
    assert nb.cells and nb.cells[0].cell_type == "markdown", f"{path.name}: the first cell must be markdown"
    assert nb.cells[0].source.lstrip().startswith("# "), f"{path.name}: the header cell opens with a title"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "ADPM_NB_SIZE" in params[0].source, \
        f"{path.name}: needs one parameters cell reading ADPM_NB_SIZE"
    code = _code(nb)
    assert any(re.search(r"^\s*assert\b", src, re.M) for src in code), f"{path.name}: no assert"
    assert re.search(r"^\s*assert\b", code[-1], re.M), f"{path.name}: the last code cell must assert the claims"
    imported = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert {"analytic_dpm", "theory"} <= imported, f"{path.name} imports {sorted(imported)}"
    # the registry results this notebook shows are named in its header
    for res in theory.RESULTS:
        if res.notebook == f"notebooks/{path.name}":
            assert f"`{res.id}`" in nb.cells[0].source, f"{path.name}: header does not name {res.id!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_at_small_size(path, tmp_path, monkeypatch, capsys):
    """Run the notebook's code top to bottom in a fresh namespace, in an empty working directory."""
    monkeypatch.setenv("ADPM_NB_SIZE", "small")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    try:
        runpy.run_path(str(path), run_name="__main__")
    finally:
        plt.close("all")
    assert "all claims hold" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == [], "the notebook wrote files"


def test_a_wrong_library_fails_the_notebook(tmp_path, monkeypatch, capsys):
    """The final asserts have teeth: posterior coefficients off by one part in 10⁹ fail notebook 01."""
    import analytic_dpm as adpm

    real = adpm.posterior_coefficients

    def wrong(*args, **kwargs):
        c0, ct, lam2 = real(*args, **kwargs)
        return c0 * (1 + 1e-9), ct, lam2

    monkeypatch.setattr(adpm, "posterior_coefficients", wrong)
    monkeypatch.setenv("ADPM_NB_SIZE", "small")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    path = next(p for p in NOTEBOOKS if p.name.startswith("01_"))
    try:
        with pytest.raises(AssertionError):
            runpy.run_path(str(path), run_name="__main__")
    finally:
        plt.close("all")
    assert "all claims hold" not in capsys.readouterr().out


def test_size_parameter_is_validated(tmp_path, monkeypatch):
    monkeypatch.setenv("ADPM_NB_SIZE", "tiny")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)
    matplotlib.use("Agg", force=True)
    path = next(p for p in NOTEBOOKS if p.name.startswith("05_"))
    with pytest.raises(ValueError, match="ADPM_NB_SIZE must be 'small' or 'full'; got 'tiny'"):
        runpy.run_path(str(path), run_name="__main__")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_in_a_jupyter_kernel(path, tmp_path, monkeypatch):
    """The notebook as Jupyter sees it: converted by jupytext and executed cell by cell by nbclient in the python3
    kernel (small size, Agg backend, an empty working directory; theory/ found through PYTHONPATH)."""
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("ADPM_NB_SIZE", "small")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    nb = jupytext.read(path)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "all claims hold" in text
    assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))
    assert list(tmp_path.iterdir()) == []
