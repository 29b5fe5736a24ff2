"""The house's plan, checked: layers without upward imports or cycles, rooms by stage, modules of a readable size."""

import ast

import pytest

from conftest import REPO

PACKAGE = REPO / "octtl"
STAGES = ("data", "synthetic", "nets", "training", "study", "results", "inference")
COMMANDS = ("train", "sweep", "max_batch", "report", "predict", "export", "make_synthetic", "to_tfrecord",
            "import_torchvision_weights")


def test_import_linter_keeps_the_layer_contract(monkeypatch):
    from importlinter.cli import lint_imports

    monkeypatch.chdir(REPO)  # setup.cfg's [importlinter] holds the contract
    assert lint_imports() == 0


def test_no_module_imports_itself_back():
    import grimp

    graph = grimp.build_graph("octtl")
    cycles = [(a, b) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)
              if graph.chain_exists(importer=b, imported=a)]
    assert cycles == []


def test_octtl_shows_commands_contracts_and_stages():
    entries = sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__")
    assert len(entries) <= 24, entries
    assert {f"{c}.py" for c in COMMANDS} | set(STAGES) <= set(entries)
    assert all(p.suffix == ".py" or p.name in STAGES for p in PACKAGE.iterdir() if p.name != "__pycache__")


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_package_is_a_docstring_saying_what_it_takes_and_gives(stage):
    tree = ast.parse((PACKAGE / stage / "__init__.py").read_text())
    assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr)
    doc = ast.get_docstring(tree)
    assert "Takes:" in doc and "Gives:" in doc


def test_no_module_over_450_lines():
    long = {str(p.relative_to(REPO)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 450}
    assert long == {}


def test_readme_reads_in_five_minutes():
    assert (REPO / "README.md").stat().st_size <= 10_000
