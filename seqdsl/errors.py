"""One error family for everything a user can get wrong, and its rendering.

Every stage raises `SeqError(message, loc, hint=...)`; the CLI prints it as
`file:line:col: message`, the source line, a caret under the offending span,
and the hint, and exits 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Loc:
    """A span of source text; lines and columns count from 1."""

    file: str
    line: int
    col: int
    end_line: int | None = None
    end_col: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class SeqError(Exception):
    """A problem in a user's spec or in how it is used."""

    def __init__(self, message: str, loc: Loc | None = None, hint: str | None = None,
                 source: str | None = None):
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.hint = hint
        self.source = source  # the text `loc` points into, when known

    def render(self, source: str | None = None) -> str:
        """`file:line:col: error: message`, the source line, a caret, the hint."""
        source = source if source is not None else self.source
        if self.loc is None:
            head = f"error: {self.message}"
        else:
            head = f"{self.loc}: error: {self.message}"
        lines = [head]
        if self.loc is not None and source is not None:
            text = source_lines(source)
            if 1 <= self.loc.line <= len(text):
                line = text[self.loc.line - 1]
                width = 1
                if self.loc.end_line == self.loc.line and self.loc.end_col:
                    width = max(1, self.loc.end_col - self.loc.col)
                lines.append(f"    {line}")
                lines.append("    " + _indent_like(line, self.loc.col - 1) + "^" * width)
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


class SeqWarning:
    """A remark that does not stop the tool (an unused intermediate, say)."""

    def __init__(self, message: str, loc: Loc | None = None):
        self.message = message
        self.loc = loc

    def render(self) -> str:
        where = f"{self.loc}: " if self.loc else ""
        return f"{where}warning: {self.message}"

    def __repr__(self) -> str:
        return f"SeqWarning({self.render()!r})"


def source_lines(source: str) -> list[str]:
    """The lines of `source` as the parser counts them: only `\n` ends a line.

    `str.splitlines` also breaks at U+2028, form feeds and other separators,
    which would make line numbers disagree with the parser's. A `\r` before
    the `\n` is dropped, and a final newline does not start an empty line.
    """
    return list(_source_lines(source))


@lru_cache(maxsize=8)
def _source_lines(source: str) -> tuple[str, ...]:
    # Cached: networks ask for the text of every layer, and a large spec
    # would otherwise be split once per layer.
    lines = source.split("\n")
    if source.endswith("\n"):
        lines.pop()
    return tuple(ln[:-1] if ln.endswith("\r") else ln for ln in lines)


def source_text(source: str, loc: Loc) -> str:
    """The text `loc` spans (lines joined by spaces)."""
    lines = list(_source_lines(source)[loc.line - 1:(loc.end_line or loc.line)])
    if not lines:
        return ""
    if len(lines) == 1:
        return lines[0][loc.col - 1:(loc.end_col or 0) - 1]
    lines[0] = lines[0][loc.col - 1:]
    lines[-1] = lines[-1][:(loc.end_col or 1) - 1]
    return " ".join(part.strip() for part in lines)


def _indent_like(line: str, n: int) -> str:
    """Spaces under the first n characters, keeping tabs so the caret lines up."""
    return "".join("\t" if ch == "\t" else " " for ch in line[:n])
