"""tools/mutation_test.py stays runnable: every mutant's snippet is still found exactly once in its file (a moved
formula makes the mutant stale, which this test reports), and each mutant names existing test files."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mutants_are_not_stale():
    spec = importlib.util.spec_from_file_location("mutation_test", ROOT / "tools" / "mutation_test.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert len(mod.MUTANTS) >= 5
    for name, (path, old, new, tests, what) in mod.MUTANTS.items():
        assert (ROOT / path).read_text().count(old) == 1, f"mutant {name!r} is stale: update its snippet"
        assert old != new and what
        assert all((ROOT / t).exists() for t in tests), name
