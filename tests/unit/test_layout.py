"""The package's structure rules, checked on the source: what import-linter cannot see.

* at most 14 modules at the top level of ``learnrun``;
* a learnrun module imported inside a function says why on that line or the one above
  (a comment); everything else is imported at the top of the module;
* no private name (``_x``) of another learnrun module is imported;
* docstrings and comments cite nothing outside the repository.
"""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

SRC = pathlib.Path(__file__).resolve().parents[2] / "src" / "learnrun"
MODULES = sorted(SRC.rglob("*.py"))


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _learnrun_imports(tree: ast.AST):
    """(node, module, names, inside a function) for each import of a learnrun module."""
    def visit(node: ast.AST, in_function: bool):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and child.module and (
                    child.module == "learnrun" or child.module.startswith("learnrun.")):
                yield child, child.module, [a.name for a in child.names], in_function
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name == "learnrun" or alias.name.startswith("learnrun."):
                        yield child, alias.name, [], in_function
            yield from visit(child, nested)
    yield from visit(tree, False)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in ast.walk(node):
                if hasattr(child, "lineno"):
                    lines.add(child.lineno)
    return lines


def test_at_most_14_modules_at_the_top_level():
    top = sorted(p.name for p in SRC.glob("*.py"))
    assert len(top) <= 14, top


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_inside_functions_give_a_reason(path):
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    unexplained = []
    for node, module, _names, in_function in _learnrun_imports(ast.parse(text)):
        if not in_function:
            continue
        here, above = lines[node.lineno - 1], lines[node.lineno - 2].strip()
        if "#" not in here and not above.startswith("#"):
            unexplained.append(f"{path.name}:{node.lineno}: {module}")
    assert not unexplained, "learnrun imports inside functions without a reason:\n" + "\n".join(
        unexplained)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_private_names_cross_modules(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = _module_name(path)
    crossing = [f"{path.name}:{node.lineno}: {module}.{name}"
                for node, module, names, _ in _learnrun_imports(tree) if module != own
                for name in names if name.startswith("_") and not name.startswith("__")]
    crossing += [f"{path.name}:{node.lineno}: {module}"
                 for node, module, _, _ in _learnrun_imports(tree)
                 if any(part.startswith("_") and not part.startswith("__")
                        and part != "_version" for part in module.split("."))]
    assert not crossing, "private names imported from other modules:\n" + "\n".join(crossing)


_OUTSIDE = re.compile(r"DESIGN|seed document|spec \d|platform-notes|\.\./shared|reference/")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_citations_of_documents_outside_the_repository(path):
    hits = [f"{path.name}:{i}: {line.strip()}"
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if _OUTSIDE.search(line)]
    assert not hits, "\n".join(hits)


def test_loggers_are_named_after_their_module():
    odd = [f"{p.relative_to(SRC)}:{i}"
           for p in MODULES
           for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
           if re.search(r"^\s*(logger|_logger|log)\s*=\s*logging\.getLogger\(", line)
           and "getLogger(__name__)" not in line]
    assert not odd, odd
