"""Provenance of python -m paper (issue 16): the sidecars record the commit of the code that produced the outputs
(determined once per run, code paths only), whether that code was dirty, and the SHA-256 of each output; a dirty code
tree may not write into the committed directory without --allow-dirty; the committed sidecars match their files."""

import hashlib
import json
import pathlib
import subprocess
import sys
import types

import pytest

from paper import __main__ as M
from paper import _common as C

ROOT = pathlib.Path(__file__).resolve().parents[1]
FULL = ROOT / "paper" / "full"
HEX40 = set("0123456789abcdef")


def _sha(path) -> str:
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


# --- (a) the commit / dirty logic, on a throwaway repository ---------------------------------------------------------


def _git(repo, *args) -> str:
    r = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false",
                        *args], cwd=repo, capture_output=True, text=True, check=True)
    return r.stdout.strip()


@pytest.fixture
def repo(tmp_path):
    r = tmp_path / "repo"
    for rel, text in {"analytic_dpm/a.py": "x = 1\n", "theory/t.py": "y = 2\n", "paper/fig.py": "z = 3\n",
                      "paper/full/fig.csv": "a,b\n", "README.md": "readme\n", ".gitignore": "__pycache__/\n"}.items():
        (r / rel).parent.mkdir(parents=True, exist_ok=True)
        (r / rel).write_text(text)
    _git(r, "init", "-q")
    _git(r, "add", "-A")
    _git(r, "commit", "-q", "-m", "init")
    return r


def test_code_state_clean_repo_records_head(repo):
    s = C.code_state(repo)
    assert s == {"commit": _git(repo, "rev-parse", "HEAD"), "dirty": False, "dirty_files": []}
    assert len(s["commit"]) == 40 and set(s["commit"]) <= HEX40
    # any directory inside the repository finds the same root
    assert C.code_state(repo / "paper" / "full") == s


def test_code_state_outputs_and_other_files_do_not_make_it_dirty(repo):
    (repo / "paper" / "full" / "gen.py").write_text("g = 1\n")  # a committed .py among the outputs: not paper/*.py
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "gen")
    (repo / "paper" / "full" / "gen.py").write_text("g = 2\n")
    (repo / "paper" / "full" / "fig.csv").write_text("a,b\n1,2\n")  # a committed output regenerated
    (repo / "paper" / "full" / "fig.png").write_bytes(b"\x89PNG")  # a new output
    (repo / "README.md").write_text("changed\n")
    (repo / "analytic_dpm" / "__pycache__").mkdir()
    (repo / "analytic_dpm" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")  # ignored
    assert C.code_state(repo)["dirty"] is False
    assert C.code_state(repo, paths=(".",))["dirty"] is True  # the same changes count when outputs are code paths


@pytest.mark.parametrize("change", ["modify", "stage", "delete", "untracked", "paper_py", "theory"])
def test_code_state_code_changes_make_it_dirty(repo, change):
    head = _git(repo, "rev-parse", "HEAD")
    expected = {"modify": "analytic_dpm/a.py", "stage": "analytic_dpm/a.py", "delete": "analytic_dpm/a.py",
                "untracked": "analytic_dpm/new.py", "paper_py": "paper/fig.py", "theory": "theory/t.py"}[change]
    if change == "delete":
        (repo / expected).unlink()
    else:
        (repo / expected).write_text("changed = True\n")
    if change == "stage":
        _git(repo, "add", expected)
    s = C.code_state(repo)
    assert s == {"commit": head, "dirty": True, "dirty_files": [expected]}
    assert C.code_state(repo, untracked=False)["dirty"] is (change != "untracked")
    # committing the change makes it clean again, at the new commit
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "change")
    s2 = C.code_state(repo)
    assert s2["dirty"] is False and s2["commit"] != head and s2["commit"] == _git(repo, "rev-parse", "HEAD")


def test_code_state_rename_lists_both_names_and_odd_names(repo):
    _git(repo, "mv", "analytic_dpm/a.py", "analytic_dpm/b c.py")
    (repo / "paper" / "ünï code.py").write_text("w = 1\n")
    s = C.code_state(repo)
    assert s["dirty"] is True
    assert s["dirty_files"] == sorted(["analytic_dpm/a.py", "analytic_dpm/b c.py", "paper/ünï code.py"])


def test_code_state_outside_a_repository(tmp_path):
    (tmp_path / "plain").mkdir()
    assert C.code_state(tmp_path / "plain") == {"commit": "unknown", "dirty": None, "dirty_files": None}
    r = tmp_path / "empty"
    r.mkdir()
    _git(r, "init", "-q")  # no commit yet: nothing to describe the code by
    assert C.code_state(r)["commit"] == "unknown"


def test_git_commit_string(monkeypatch):
    monkeypatch.setattr(C, "code_state", lambda: {"commit": "a" * 40, "dirty": True, "dirty_files": ["x"]})
    assert C.git_commit() == "a" * 40 + "-dirty"
    monkeypatch.setattr(C, "code_state", lambda: {"commit": "b" * 40, "dirty": False, "dirty_files": []})
    assert C.git_commit() == "b" * 40


# --- write_sidecar: hashes, lazy state outside a run, the run's state inside one ------------------------------------


def test_write_sidecar_outside_a_run_determines_the_state_when_writing(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(C, "code_state", lambda: calls.append(1) or {"commit": "c" * 40, "dirty": False,
                                                                       "dirty_files": []})
    out = tmp_path / "x.csv"
    out.write_text("a\n1\n")
    sidecar = C.write_sidecar(out, {"k": 1}, seeds=[3])
    meta = json.loads(sidecar.read_text())
    assert sidecar == tmp_path / "x.csv.json" and calls == [1]
    assert meta["output"] == "x.csv" and meta["sha256"] == _sha(out)
    assert (meta["commit"], meta["dirty"], meta["dirty_files"]) == ("c" * 40, False, [])
    assert "not inside python -m paper" in meta["commit_determined"]
    assert meta["config"] == {"k": 1} and meta["seeds"] == [3]


def test_write_sidecar_real_checkout_state():
    """Outside a run, against this checkout: the recorded state is code_state() now."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        out = pathlib.Path(d) / "y.md"
        out.write_text("# y\n")
        meta = json.loads(C.write_sidecar(out, {}).read_text())
    s = C.code_state()  # (the dirty files are not compared: others may edit the checkout in between)
    assert meta["commit"] == s["commit"] and meta["dirty"] in (True, False, None)
    assert meta["dirty"] is (None if s["commit"] == "unknown" else bool(meta["dirty_files"]))


def test_write_sidecar_needs_the_output_first(tmp_path):
    with pytest.raises(FileNotFoundError, match="write the output first"):
        C.write_sidecar(tmp_path / "missing.csv", {})
    assert not (tmp_path / "missing.csv.json").exists()


def test_provenance_run_state_is_used_and_restored(tmp_path, monkeypatch):
    monkeypatch.setattr(C, "code_state", lambda: pytest.fail("code_state must not be called inside a run"))
    out = tmp_path / "z.tex"
    out.write_text("tex\n")
    state = {"commit": "d" * 40, "dirty": True, "dirty_files": ["analytic_dpm/a.py"]}
    with C.provenance_run({**state, "allow_dirty": True}):
        meta = json.loads(C.write_sidecar(out, {}).read_text())
    assert {k: meta[k] for k in state} == state and meta["allow_dirty"] is True
    assert meta["commit_determined"] == "at the start of the python -m paper run"
    assert C._RUN_STATE is None


def test_save_figure_is_byte_reproducible(tmp_path, monkeypatch):
    """PNG (Agg) and PDF bytes do not depend on the time of the run: the PDF has no CreationDate. Two different
    SOURCE_DATE_EPOCH values would give two different dates if matplotlib wrote one."""
    plt = C.pyplot()

    def draw(stem, epoch):
        monkeypatch.setenv("SOURCE_DATE_EPOCH", str(epoch))
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot([0, 1, 2], [0, 1, 4], label="σ² and Γ̂")
        ax.legend()
        return C.save_figure(fig, tmp_path / f"{stem}.png")

    a, b = draw("a", 0), draw("b", 1_000_000_000)
    assert [p.suffix for p in a] == [".png", ".pdf"]
    for pa, pb in zip(a, b):
        assert pa.read_bytes() == pb.read_bytes(), pa.suffix
    assert b"CreationDate" not in a[1].read_bytes()


# --- (b) main(): refusal into the committed directory, --allow-dirty, the state taken once before the targets ------


@pytest.fixture
def fake_target(monkeypatch):
    """A target 'fake' that writes two outputs with sidecars, and changes the (fake) code state between them: the
    sidecars must both record the state from the start of the run."""
    log = {"state_calls_before_run": None, "calls": 0, "changes": 0}
    states = []

    def code_state():
        log["calls"] += 1
        return dict(states[min(log["changes"], len(states) - 1)])

    def run(out_dir, fast=False):
        log["state_calls_before_run"] = log["calls"]
        paths = []
        for i, name in enumerate(("f1.csv", "f2.md")):
            p = out_dir / name
            p.write_text(f"output {i}\n")
            C.write_sidecar(p, {"fast": fast})
            paths.append(p)
            log["changes"] += 1  # the tree "changes" after each output: later code_state() calls see the next state
        return paths

    mod = types.ModuleType("paper_fake_target")
    mod.run = run
    monkeypatch.setitem(sys.modules, "paper_fake_target", mod)
    monkeypatch.setitem(M.TARGETS, "fake", ("paper_fake_target", "a fake target"))
    monkeypatch.setattr(C, "code_state", code_state)
    return log, states


CLEAN = {"commit": "e" * 40, "dirty": False, "dirty_files": []}
DIRTY = {"commit": "e" * 40, "dirty": True, "dirty_files": ["analytic_dpm/a.py"]}
UNKNOWN = {"commit": "unknown", "dirty": None, "dirty_files": None}


def _sidecars(d):
    return {n: json.loads((d / f"{n}.json").read_text()) for n in ("f1.csv", "f2.md")}


@pytest.mark.parametrize("start", [DIRTY, UNKNOWN])
def test_main_refuses_a_dirty_tree_for_the_committed_directory(tmp_path, monkeypatch, fake_target, capsys, start):
    log, states = fake_target
    states[:] = [start]
    committed = tmp_path / "full"
    monkeypatch.setattr(M, "COMMITTED_OUT", committed)
    assert M.main(["fake", "--out", str(committed)]) == 2
    err = capsys.readouterr().err
    assert "refusing to write into the committed output directory" in err and "--allow-dirty" in err
    assert ("analytic_dpm/a.py" in err) if start is DIRTY else ("cannot be determined" in err)
    assert log["state_calls_before_run"] is None and not committed.exists()  # nothing ran, nothing was written
    # a subdirectory of the committed directory is committed too
    assert M.main(["fake", "--out", str(committed / "sub")]) == 2 and not committed.exists()


def test_main_allow_dirty_writes_with_loud_warning(tmp_path, monkeypatch, fake_target, capsys):
    log, states = fake_target
    states[:] = [DIRTY]
    committed = tmp_path / "full"
    monkeypatch.setattr(M, "COMMITTED_OUT", committed)
    assert M.main(["fake", "--out", str(committed), "--allow-dirty"]) == 0
    err = capsys.readouterr().err
    assert "WARNING: --allow-dirty" in err and "!!!!!!!!" in err
    for name, meta in _sidecars(committed).items():
        assert meta["dirty"] is True and meta["allow_dirty"] is True and meta["dirty_files"] == ["analytic_dpm/a.py"]
        assert meta["sha256"] == _sha(committed / name)


def test_main_dirty_tree_elsewhere_is_only_flagged(tmp_path, monkeypatch, fake_target, capsys):
    log, states = fake_target
    states[:] = [DIRTY]
    monkeypatch.setattr(M, "COMMITTED_OUT", tmp_path / "full")
    out = tmp_path / "out"
    assert M.main(["fake", "--out", str(out), "--fast"]) == 0
    err = capsys.readouterr().err
    assert "refusing" not in err and "WARNING" not in err and "sidecars record it" in err
    for meta in _sidecars(out).values():
        assert meta["dirty"] is True and "allow_dirty" not in meta and meta["config"] == {"fast": True}


def test_main_state_is_taken_once_before_the_targets(tmp_path, monkeypatch, fake_target, capsys):
    """The code state is determined before the target runs; a change while it runs (state 2, 3) is not recorded in
    the later sidecar, and is reported: an error for the committed directory, a warning elsewhere."""
    log, states = fake_target
    later = {"commit": "f" * 40, "dirty": True, "dirty_files": ["paper/fig.py"]}
    states[:] = [CLEAN, later]
    committed = tmp_path / "full"
    monkeypatch.setattr(M, "COMMITTED_OUT", committed)
    assert M.main(["fake", "--out", str(committed)]) == 2
    assert log["state_calls_before_run"] == 1
    assert "the code changed while the targets ran" in capsys.readouterr().err
    for meta in _sidecars(committed).values():
        assert (meta["commit"], meta["dirty"], meta["dirty_files"]) == ("e" * 40, False, [])
        assert meta["commit_determined"] == "at the start of the python -m paper run"
    log["changes"] = 0
    assert M.main(["fake", "--out", str(tmp_path / "elsewhere")]) == 0
    assert "WARNING: the code changed" in capsys.readouterr().err


def test_main_clean_tree_writes_the_committed_directory(tmp_path, monkeypatch, fake_target, capsys):
    log, states = fake_target
    states[:] = [CLEAN]
    committed = tmp_path / "full"
    monkeypatch.setattr(M, "COMMITTED_OUT", committed)
    assert M.main(["fake", "--out", str(committed)]) == 0
    assert capsys.readouterr().err == ""
    for name, meta in _sidecars(committed).items():
        assert (meta["commit"], meta["dirty"], meta["dirty_files"]) == ("e" * 40, False, [])
        assert meta["sha256"] == _sha(committed / name) and meta["output"] == name


def test_committed_out_default_is_paper_full():
    assert M.COMMITTED_OUT == FULL.resolve()
    assert M.is_committed_out(FULL) and M.is_committed_out(ROOT / "paper" / "full" / "." / "x")
    assert not M.is_committed_out(ROOT / "paper" / "out") and not M.is_committed_out(ROOT / "paper" / "fullx")


# --- (c) the committed sidecars against the committed files ----------------------------------------------------------


def _committed_sidecars():
    return sorted(p for p in FULL.glob("*.json"))


def test_committed_sidecars_match_their_files():
    """Every sidecar in paper/full names the file beside it; where it records a SHA-256 the file has that hash, and
    its commit is a full commit of this repository. PDFs are not committed (.gitignore: paper/full/*.pdf), so a
    missing PDF is allowed, but a PDF present must match."""
    sidecars = _committed_sidecars()
    assert sidecars, "paper/full has no sidecars"
    problems = []
    commits = set()
    for sc in sidecars:
        meta = json.loads(sc.read_text())
        target = sc.with_name(sc.name[: -len(".json")])
        if meta.get("output") != target.name:
            problems.append(f"{sc.name}: output {meta.get('output')!r} is not {target.name!r}")
            continue
        if not target.exists():
            if target.suffix != ".pdf":
                problems.append(f"{sc.name}: {target.name} is missing")
            continue
        if "sha256" in meta:
            if _sha(target) != meta["sha256"]:
                problems.append(f"{sc.name}: {target.name} has SHA-256 {_sha(target)[:12]}…, the sidecar records "
                                f"{meta['sha256'][:12]}… (regenerate paper/full, or the file was edited by hand)")
            c = meta.get("commit", "")
            if not (len(c) == 40 and set(c) <= HEX40):
                problems.append(f"{sc.name}: commit {c!r} is not a full commit")
            elif meta.get("dirty") is not False and meta.get("allow_dirty") is not True:
                problems.append(f"{sc.name}: dirty = {meta.get('dirty')!r} without allow_dirty")
            else:
                commits.add(c)
    assert not problems, "\n".join(problems)
    if commits and C.code_state(ROOT)["commit"] != "unknown":
        for c in commits:  # the recorded commits exist in this repository's history
            r = subprocess.run(["git", "cat-file", "-e", f"{c}^{{commit}}"], cwd=ROOT, capture_output=True)
            assert r.returncode == 0, f"sidecar commit {c} is not in this repository"


def test_committed_sidecar_check_can_fail(tmp_path, monkeypatch):
    """The check above on a copy with one file changed after its sidecar was written."""
    (tmp_path / "t.md").write_text("original\n")
    C.write_sidecar(tmp_path / "t.md", {})
    (tmp_path / "t.md").write_text("edited\n")
    monkeypatch.setattr(sys.modules[__name__], "FULL", tmp_path)
    with pytest.raises(AssertionError, match="t.md has SHA-256"):
        test_committed_sidecars_match_their_files()


def test_table7_regenerates_byte_identical_to_paper_full(tmp_path):
    """Regenerate the cheap table7 target at full size (well under a second, so not marked slow); its outputs equal
    the committed ones byte for byte, and the new sidecars' hashes equal the committed files' hashes."""
    assert M.main(["table7", "--out", str(tmp_path)]) == 0
    for name in ("table7.md", "table7.csv", "table7.tex"):
        assert (tmp_path / name).read_bytes() == (FULL / name).read_bytes(), name
        meta = json.loads((tmp_path / f"{name}.json").read_text())
        assert meta["sha256"] == _sha(FULL / name)
        committed = json.loads((FULL / f"{name}.json").read_text())
        if "sha256" in committed:
            assert committed["sha256"] == meta["sha256"]
