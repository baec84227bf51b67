"""Imports run one way, floor by floor: errors ← lang/ ← ir/ ← runtime/ ← the
API ← tools and interop ← cli. Read from the source (every import statement,
those inside functions too), so a module cannot borrow from a floor above
it without this failing, whether or not anything imports it at run time."""
import ast
import pathlib
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "seqdsl"


def imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file at `path`."""
    # The package a relative import starts from: a module's, or for an
    # `__init__.py`, the package it is the body of (the same folder).
    package = list(path.relative_to(PACKAGE.parent).parent.parts)
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if node.module:
                found.append((node.lineno, module))
            else:  # `from . import syntax`: each name is a module of the package
                found += [(node.lineno, f"{module}.{a.name}") for a in node.names]
    return found


def modules(floor: str) -> list[pathlib.Path]:
    return sorted((PACKAGE / floor).rglob("*.py"))


def outside(floor: str, allowed_own: tuple[str, ...], allowed_other: tuple[str, ...] = ()):
    """Imports of the modules of `floor` that reach outside what it may use:
    the seqdsl modules named in `allowed_own`, the standard library and the
    packages in `allowed_other`."""
    bad = []
    for path in modules(floor):
        for line, name in imports(path):
            top = name.split(".")[0]
            if top == "seqdsl":
                ok = any(name == m or name.startswith(m + ".") for m in allowed_own)
            else:
                ok = top == "__future__" or top in sys.stdlib_module_names or top in allowed_other
            if not ok:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {name}")
    return bad


def test_imports_are_resolved_as_python_resolves_them():
    lang_network = imports(PACKAGE / "lang" / "network.py")
    assert any(name == "seqdsl.lang.syntax" for _, name in lang_network)
    assert any(name == "seqdsl.errors" for _, name in lang_network)
    assert any(name == "seqdsl.lang.network" for _, name in imports(PACKAGE / "ir" / "network.py"))


@pytest.mark.parametrize("floor", ["lang", "ir"])
def test_floor_has_modules(floor):
    assert len(modules(floor)) >= 3


def test_lang_imports_only_errors_and_lark():
    """The language front end knows nothing of sizes, graphs or running:
    no import of seqdsl.ir, seqdsl.runtime or anything above them."""
    assert outside("lang", ("seqdsl.errors", "seqdsl.lang"), ("lark",)) == []


def test_ir_imports_nothing_downstream():
    """The IR reads checked definitions (lang/) and never what executes or
    presents it: no runtime/, cli/, nor the API, tools or interop. Of
    libraries, NumPy, and graphviz for dot.py's DOT text (rendering it to a
    picture, which needs the `dot` program, is tools/render.py's)."""
    assert outside("ir", ("seqdsl.errors", "seqdsl.lang", "seqdsl.ir"),
                   ("numpy", "graphviz")) == []


def test_search_imports_only_what_is_below_it():
    """The search stands beside train/ and tools/: it reads cells (lang/),
    lowers and compares their graphs (ir/), checks them through the API
    (seqdsl.spec) and trains them (runtime/, train/), on Ray (the optional
    extra) with matplotlib's plot; nothing below imports it, and it never
    reaches the CLI."""
    assert len(modules("search")) >= 3
    assert outside("search", ("seqdsl.errors", "seqdsl.lang", "seqdsl.ir", "seqdsl.runtime",
                              "seqdsl.spec", "seqdsl.train", "seqdsl.search"),
                   ("numpy", "ray", "matplotlib")) == []
    for floor in ("lang", "ir", "runtime"):
        for path in modules(floor):
            assert not any(name.startswith("seqdsl.search") for _, name in imports(path)), path
