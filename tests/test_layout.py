"""The package's shape stays what issue 25 made it: no module over 450 lines, no function over 60, no capability
sniffing of methods (a method declares what it is), and no private name imported from another module."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "diffprobe"
SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_no_module_over_450_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in SOURCES if (n := len(p.read_text().splitlines())) > 450}
    assert not long, long


def test_no_function_over_60_lines():
    long = []
    for p in SOURCES:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{p.relative_to(PACKAGE)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long


def test_no_capability_sniffing_and_no_private_imports():
    found = []
    for p in SOURCES:
        tree = ast.parse(p.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("getattr", "hasattr") and any(
                    isinstance(a, ast.Constant) and a.value in ("data_dependent", "summary", "kernels")
                    for a in node.args):
                found.append(f"{p.relative_to(PACKAGE)}:{node.lineno} sniffs {ast.unparse(node)}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("diffprobe"):
                found += [f"{p.relative_to(PACKAGE)}:{node.lineno} imports {a.name} from {node.module}"
                          for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, found


def test_no_class_or_pipeline_name_test_outside_models():
    """Model families live in models/ (issue 26): elsewhere nothing compares a class name or names a pipeline."""
    found = []
    for p in SOURCES:
        if p.is_relative_to(PACKAGE / "models"):
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Compare) and any(
                    isinstance(x, ast.Attribute) and x.attr == "__name__" for x in (node.left, *node.comparators)):
                found.append(f"{p.relative_to(PACKAGE)}:{node.lineno} {ast.unparse(node)}")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith("Pipeline") \
                    and node.value[:1].isupper():
                found.append(f"{p.relative_to(PACKAGE)}:{node.lineno} names {node.value}")
    assert not found, found
