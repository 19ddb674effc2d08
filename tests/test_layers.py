"""The apps are layered: governance ← review ← knowledge ← integrations ← convo.

A lower app never imports a higher one (not even lazily inside a function), so that the
lower apps stay reusable and the dependency graph stays a line. ``config`` is plumbing and
may be imported from anywhere. Migrations are excluded: they name other apps' models."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["governance", "review", "knowledge", "integrations", "convo"]
RANK = {app: i for i, app in enumerate(LAYERS)}


def python_files(app: str) -> list[Path]:
    return sorted(p for p in (ROOT / app).rglob("*.py") if "migrations" not in p.relative_to(ROOT).parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in the file, wherever it stands."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # ``from convo import services`` names the module in the alias.
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names if alias.name != "*"]
    return found


def layer_violations(app: str) -> list[str]:
    problems = []
    for path in python_files(app):
        for line, module in imported_modules(path):
            top = module.split(".")[0]
            if top in RANK and RANK[top] > RANK[app]:
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return sorted(set(problems))


@pytest.mark.parametrize("app", LAYERS)
def test_app_imports_only_itself_lower_apps_and_config(app):
    assert python_files(app), f"no Python files found for {app}"
    assert layer_violations(app) == []


def test_the_checker_sees_violations(tmp_path, monkeypatch):
    """The check must be able to fail: a lazy upward import inside a function is caught."""
    fake_root = tmp_path
    (fake_root / "review").mkdir()
    (fake_root / "review" / "ok.py").write_text("from governance.services import audit_event_record\nimport config\n")
    (fake_root / "review" / "bad.py").write_text(
        "def f():\n    from convo import services\n    import integrations.models\n    from . import ok\n")
    (fake_root / "review" / "migrations").mkdir()
    (fake_root / "review" / "migrations" / "0001.py").write_text("import convo.models\n")
    monkeypatch.setattr(f"{__name__}.ROOT", fake_root)
    assert layer_violations("review") == [
        "review/bad.py:2 imports convo",
        "review/bad.py:2 imports convo.services",
        "review/bad.py:3 imports integrations.models",
    ]


def test_relative_imports_are_resolved(tmp_path, monkeypatch):
    (tmp_path / "knowledge" / "sub").mkdir(parents=True)
    target = tmp_path / "knowledge" / "sub" / "mod.py"
    target.write_text("from ..models import Chunk\nfrom . import helpers\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert [m for _, m in imported_modules(target)] == [
        "knowledge.models", "knowledge.models.Chunk", "knowledge.sub", "knowledge.sub.helpers"]
