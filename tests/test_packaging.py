"""environment.yml mirrors pyproject.toml, and the repository has the designed layout."""

import pathlib
import re
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _name_spec(req: str):
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(_name_spec(r) for r in project["dependencies"] + project["optional-dependencies"]["test"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip.extend(dep["pip"])
        else:
            name, spec = _name_spec(dep.replace("=", "==", 1) if re.match(r"^[\w-]+=[^=]", dep) else dep)
            conda[name] = spec
    assert conda.pop("python") == "==3.11"
    conda.pop("pip")
    pip_named = dict(_name_spec(p) for p in pip if not p.startswith("-e"))
    listed = {**conda, **pip_named}
    assert listed == wanted, "environment.yml and pyproject.toml list different dependencies"
    assert any(p.replace(" ", "") == "-e.[test]" for p in pip), "environment.yml must pip-install the package"


def test_layout():
    for d in ["theory", "analytic_dpm", "notebooks", "tests", "paper"]:
        assert (ROOT / d).is_dir(), d
    for f in ["environment.yml", "README.md", "pyproject.toml", "Makefile", ".ci/run"]:
        assert (ROOT / f).is_file(), f
    assert "make test" in (ROOT / ".ci/run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme


def test_readme_map_lists_every_registry_entry():
    import theory.registry as reg

    readme = (ROOT / "README.md").read_text()
    ids = [r.id for r in reg.RESULTS]
    assert ids, "registry is empty"
    missing = [i for i in ids if f"`{i}`" not in readme]
    assert not missing, f"README map lacks registry entries {missing}"


def test_readme_map_notebooks_match_registry():
    import theory.registry as reg

    rows = {line.split("|")[1].strip().strip("`"): line for line in (ROOT / "README.md").read_text().splitlines()
            if line.startswith("| `")}
    for r in reg.RESULTS:
        assert r.id in rows, r.id
        assert r.notebook and f"`{r.notebook}`" in rows[r.id], (r.id, r.notebook)
