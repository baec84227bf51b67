"""docs/errors.md lists every error and warning with an example that gives
it; each example is run here and must give the message the page shows.

An entry is a `### ` heading followed by either
- a ```seq block (saved as `example.seq`) and a ```console block whose first
  line is the command (`$ seqdsl ...`) and whose other lines must each appear
  in what the command prints, or
- a ```python block that must raise SeqError (or warn) with the message on
  its last line, written `# SeqError: message` or `# SeqWarning: message`.

In an expected line, `…` stands for any text within the line (a temporary
path, the memory a machine has). A command that prints an error (or a
failed gradcheck) must exit with status 1, or 2 for a usage error
(`seqdsl CMD: error: ...`); one that prints only warnings, with status 0.
A python block may change environment variables: they are restored after it.
"""
import os
import pathlib
import re
import shlex
import tempfile
import warnings
from unittest import mock

import numpy as np
import pytest

import seqdsl

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "errors.md"
BLOCK = re.compile(r"```(seq|console|python)\n(.*?)```", re.S)


def entries():
    """(title, blocks) for each `### ` entry of the page."""
    found = []
    for part in DOC.read_text("utf-8").split("\n### ")[1:]:
        title = part.splitlines()[0].strip()
        found.append(pytest.param(BLOCK.findall(part), id=title))
    return found


ENTRIES = entries()


def test_page_has_entries():
    assert len(ENTRIES) >= 150


@pytest.mark.parametrize("blocks", ENTRIES)
def test_documented_example(blocks, tmp_path, run_cli, monkeypatch):
    kinds = [k for k, _ in blocks]
    assert kinds in (["seq", "console"], ["console"], ["python"]), kinds
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEQDSL_CACHE_DIR", str(tmp_path / "cache"))
    # The cache's fallback folders go here too, not into the real temporary directory.
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    if kinds[-1] == "console":
        if kinds[0] == "seq":
            (tmp_path / "example.seq").write_text(blocks[0][1], "utf-8")
        _check_console(blocks[-1][1], run_cli)
    else:
        _check_python(blocks[0][1])


def _check_console(text, run_cli):
    command, *expected = text.rstrip("\n").splitlines()
    assert command.startswith("$ seqdsl "), command
    code, out, err = run_cli(*shlex.split(command[len("$ seqdsl "):]))
    printed = out + err
    assert "Traceback" not in printed
    for line in expected:
        assert _shows(line, printed), f"{line!r} not in:\n{printed}"
    if any(USAGE.match(line) for line in expected):
        assert code == 2, printed
    elif any(": error: " in line or line.startswith(("error: ", "FAILED: "))
             for line in expected):
        assert code == 1, printed
    elif any(": warning: " in line or line.startswith("warning: ") for line in expected):
        assert code == 0, printed


USAGE = re.compile(r"seqdsl( [a-z]+)?: error: ")


def _shows(expected: str, printed: str) -> bool:
    """Whether `printed` holds the line `expected`, where `…` is any text
    within one line."""
    pattern = "[^\n]*?".join(re.escape(part) for part in expected.split("…"))
    return re.search(pattern, printed) is not None


def _check_python(code):
    *body, last = code.rstrip("\n").splitlines()
    kind, message = re.fullmatch(r"# (SeqError|SeqWarning): (.*)", last.strip()).groups()
    scope = {"seqdsl": seqdsl, "np": np}
    with mock.patch.dict(os.environ), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if kind == "SeqError":
            with pytest.raises(seqdsl.SeqError) as info:
                exec("\n".join(body), scope)
            assert _shows(message, str(info.value)), str(info.value)
        else:
            exec("\n".join(body), scope)
            said = [str(w.message) for w in caught]
            assert any(_shows(message, s) for s in said), said
