"""The tree's layout holds: no import circle, model/ is only the runtime the Lambda ships, nothing
outside tests/ imports tests, and the trainer's loop stays short. Read from the source (ast), nothing imported."""
from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("training", "model", "benchmarks", "experiments", "scripts", "tests")


def project_modules() -> dict[str, Path]:
    modules = {"handler": ROOT / "handler.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports(path: Path, modules: dict[str, Path], top_level_only: bool = False) -> set[str]:
    """The project modules a file imports (`from pkg import mod` counts as pkg.mod when that is a module)."""
    found = set()
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle in graph, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_module_imports_itself_round_a_circle():
    modules = project_modules()
    graph = {name: imports(path, modules) - {name} for name, path in modules.items()}
    graph = {name: {m for m in deps if not name.startswith(m + ".")} for name, deps in graph.items()}  # a package's own __init__
    assert cycle(graph) is None, " -> ".join(cycle(graph))


def test_the_cycle_finder_finds_one():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


# Still to move: the fuzz strategies the fuzz benchmark draws from live in tests/test_fuzz.py itself.
NOT_YET_MOVED = {"benchmarks.fuzz_handler imports tests.test_fuzz"}


def test_nothing_outside_tests_imports_a_test_module():
    """Benchmarks that drive the service as the tests do share tests/support (events, the local stack,
    the photos); no test module or conftest is imported from outside tests/."""
    modules = project_modules()
    offenders = {f"{name} imports {dep}" for name, path in modules.items() if not name.startswith("tests")
                 for dep in imports(path, modules)
                 if (dep == "tests" or dep.startswith("tests.")) and not dep.startswith("tests.support")}
    assert offenders <= NOT_YET_MOVED, sorted(offenders - NOT_YET_MOVED)


def test_model_is_the_torch_free_runtime_the_lambda_ships():
    for path in sorted((ROOT / "model").glob("*.py")):
        top = ast.parse(path.read_text()).body
        names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
        names += [n.module for n in top if isinstance(n, ast.ImportFrom) and n.module]
        assert not [n for n in names if n.split(".")[0] == "torch" or n.startswith("training")], path


def test_the_training_loop_stays_short():
    assert len((ROOT / "training" / "train.py").read_text().splitlines()) <= 450


def test_set_up_waits_for_the_apt_lock_instead_of_failing():
    """A fresh machine's unattended upgrade holds dpkg's lock: every apt-get in set-up waits for it."""
    import re

    setup = (ROOT / "scripts" / "setup.sh").read_text()
    calls = [line for line in setup.splitlines() if re.search(r"\bapt-get\b", line) and not line.lstrip().startswith("#")]
    assert calls and all("DPkg::Lock::Timeout=" in line or '"${APT[@]}"' in line for line in calls), calls
    assert 'APT=(apt-get -o "DPkg::Lock::Timeout=' in setup


def test_the_readme_is_a_guide_within_its_word_limit_and_names_what_the_trainer_writes():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.split()) < 3500
    assert "\n## The default model\n" in readme and "](experiments/README.md)" in readme
    assert "--lambda-port" in readme and "git checkout model/default" in readme
    # The sample frames are named as the trainer names them (training.report.frame_path).
    assert "samples/epoch_0003.png" in readme and "samples/epoch_0003_00011.png" in readme
    for flag in ("--api-port", "--lambda-port", "--web-port"):  # every port flag of the local stack is documented
        assert flag in (ROOT / "scripts" / "local_stack.py").read_text()
