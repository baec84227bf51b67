"""Text → syntax tree. The only module that imports lark."""
from __future__ import annotations

import os
from functools import lru_cache
from importlib import resources

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from . import syntax as S
from .errors import Loc, SeqError

_OPEN = {"LPAR": "(", "LSQB": "[", "LBRACE": "{"}
_CLOSE = {"RPAR": "LPAR", "RSQB": "LSQB", "RBRACE": "LBRACE"}

# How a terminal is named in "expected ..." messages.
_FRIENDLY = {
    "NAME": "a name", "NUMBER": "a number", "INT": "an integer", "_NL": "end of line",
    "$END": "end of file", "LPAR": "`(`", "RPAR": "`)`", "LSQB": "`[`", "RSQB": "`]`",
    "LBRACE": "`{`", "RBRACE": "`}`", "EQUAL": "`=`", "COMMA": "`,`", "COLON": "`:`",
    "PLUS": "`+`", "MINUS": "`-`", "STAR": "`*`", "SLASH": "`/`", "LESSTHAN": "`<`",
    "MORETHAN": "`>`", "TILDE": "`~`", "AT": "`@`",
}
_KEYWORDS = ("cell", "network", "input", "state", "param", "output")


class _Brackets:
    """Post-lexer: newlines end statements, except inside ( ) and [ ].

    It remembers the brackets still open so that a missing `)` is reported
    where it was opened, not at the far-away token where parsing gave up.
    """

    always_accept = ("_NL",)

    def __init__(self):
        self.open: list[Token] = []

    def process(self, stream):
        self.open = []
        for tok in stream:
            if tok.type in ("LPAR", "LSQB"):
                self.open.append(tok)
            elif tok.type in ("RPAR", "RSQB") and self.open:
                self.open.pop()
            elif tok.type == "_NL" and self.open:
                continue
            yield tok


@lru_cache(maxsize=1)
def _parser() -> tuple[Lark, _Brackets]:
    post = _Brackets()
    grammar = resources.files("seqdsl.grammars").joinpath("seq.lark").read_text("utf-8")
    lark = Lark(grammar, parser="lalr", propagate_positions=True, postlex=post,
                maybe_placeholders=False)
    return lark, post


def parse(source: str, file: str = "<string>") -> S.Module:
    """Parse .seq source text into a syntax tree; raises SeqError on bad input."""
    if not source.strip() or all(
            not ln.strip() or ln.lstrip().startswith("#") for ln in source.splitlines()):
        raise SeqError("the file defines nothing: expected a `cell` or `network` definition",
                       Loc(file, 1, 1), source=source)
    lark, post = _parser()
    text = source if source.endswith("\n") else source + "\n"
    try:
        tree = lark.parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(e, post, file, source) from None
    defs = _ToSyntax(file).transform(tree).children
    return S.Module(file=file, source=source, definitions=tuple(defs))


def read_source(path: str) -> str:
    """Read a spec file as UTF-8, with clear errors for a missing or non-UTF-8 file."""
    if not os.path.exists(path):
        raise SeqError(f"{path}: no such file")
    if os.path.isdir(path):
        raise SeqError(f"{path}: is a directory, not a .seq file")
    data = open(path, "rb").read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        before = data[:e.start].decode("utf-8")
        line = before.count("\n") + 1
        col = len(before) - (before.rfind("\n") + 1) + 1
        raise SeqError(f"the file is not UTF-8 text: byte 0x{data[e.start]:02x} cannot be decoded",
                       Loc(path, line, col), hint="save the file as UTF-8",
                       source=data.decode("utf-8", errors="replace")) from None


def parse_file(path: str) -> S.Module:
    return parse(read_source(path), path)


# ---- syntax errors -----------------------------------------------------------

def _describe(tok: Token | None) -> str:
    if tok is None or tok.type == "$END":
        return "end of file"
    if tok.type == "_NL":
        return "end of line"
    return f"`{tok}`"


def _expected(names) -> str:
    shown = sorted({_FRIENDLY.get(n, f"`{n.lower()}`") for n in names if not n.startswith("__")})
    if not shown:
        return ""
    if len(shown) > 6:
        shown = shown[:6] + ["…"]
    return "; expected " + (shown[0] if len(shown) == 1 else "one of " + ", ".join(shown))


def _syntax_error(e: UnexpectedInput, post: _Brackets, file: str, source: str) -> SeqError:
    unclosed = post.open[-1] if post.open else None
    if isinstance(e, UnexpectedCharacters):
        ch = source.splitlines()[e.line - 1][e.column - 1] if e.line <= len(source.splitlines()) else "?"
        return SeqError(f"unexpected character `{ch}`", Loc(file, e.line, e.column),
                        hint=_char_hint(ch), source=source)
    tok = getattr(e, "token", None)
    if isinstance(e, UnexpectedEOF) or tok is None or tok.type == "$END":
        if unclosed is not None:
            return _unclosed(unclosed, file, source, None)
        lines = source.splitlines()
        loc = Loc(file, len(lines), len(lines[-1]) + 1 if lines else 1)
        return SeqError("unexpected end of file" + _expected(getattr(e, "expected", ())), loc,
                        hint="is a closing `}` missing?", source=source)
    assert isinstance(e, UnexpectedToken)
    if unclosed is not None and (tok.line > unclosed.line or tok.type in ("RBRACE", "_NL")):
        return _unclosed(unclosed, file, source, tok)
    line, col = tok.line, tok.column
    if tok.type == "_NL":  # point just past the last token on the line, not at the next line
        prev = source.splitlines()[e.line - 1] if e.line - 1 < len(source.splitlines()) else ""
        line, col = e.line, e.column
        if prev[col - 1:col] == "\n" or col > len(prev):
            col = len(prev.rstrip()) + 1
    end = col + len(str(tok)) if tok.type != "_NL" else col + 1
    hint = None
    if str(tok) in _KEYWORDS:
        hint = f"`{tok}` starts a statement of its own; put it on a new line"
    elif tok.type == "RPAR":
        hint = "there is a `)` with no `(` to close"
    return SeqError(f"unexpected {_describe(tok)}" + _expected(e.accepts or e.expected),
                    Loc(file, line, col, line, end), hint=hint, source=source)


def _unclosed(opener: Token, file: str, source: str, at: Token | None) -> SeqError:
    closer = {"LPAR": ")", "LSQB": "]"}[opener.type]
    where = "the end of the file" if at is None else f"{_describe(at)} at line {at.line}, column {at.column}"
    return SeqError(f"`{opener}` is never closed", Loc(file, opener.line, opener.column,
                    opener.line, opener.column + 1),
                    hint=f"add the missing `{closer}` (the parser reached {where} without it)",
                    source=source)


def _char_hint(ch: str) -> str | None:
    if ch == "{":
        return "`{` opens a cell or network body: `cell Name { ... }`"
    if ch in "^~":
        return "`~` and `^` spell marks at the end of a name (`c~` is `c̃`, `y^` is `ŷ`)"
    return None


# ---- parse tree → syntax tree -------------------------------------------------

def _tok_loc(file: str, tok: Token) -> Loc:
    return Loc(file, tok.line, tok.column, tok.end_line, tok.end_column)


@v_args(meta=True)
class _ToSyntax(Transformer):
    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def _loc(self, meta) -> Loc:
        return Loc(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    # definitions
    def cell(self, meta, children):
        name, *body = children
        return S.CellDef(S.normalise_name(name), tuple(body), self._loc(meta))

    def network(self, meta, children):
        name, *body = children
        return S.NetworkDef(S.normalise_name(name), tuple(body), self._loc(meta))

    # statements
    def name_list(self, meta, children):
        return tuple(S.normalise_name(t) for t in children)

    def input_decl(self, meta, children):
        kind = str(children[1]) if len(children) > 1 else None
        return S.InputDecl(children[0], kind, self._loc(meta))

    def state_decl(self, meta, children):
        size = None
        if len(children) > 1:
            tok = children[1]
            size = int(tok) if tok.type == "INT" else str(tok)
        return S.StateDecl(children[0], size, self._loc(meta))

    def param_value(self, meta, children):
        return S.ParamDecl(S.normalise_name(children[0]), children[1], None, self._loc(meta))

    def param_init(self, meta, children):
        return S.ParamDecl(S.normalise_name(children[0]), None, children[1], self._loc(meta))

    def param_plain(self, meta, children):
        return S.ParamDecl(S.normalise_name(children[0]), None, None, self._loc(meta))

    def output_decl(self, meta, children):
        expr = children[1] if len(children) > 1 else None
        return S.OutputDecl(children[0], expr, self._loc(meta))

    def equation(self, meta, children):
        return S.Equation(children[0], children[1], self._loc(meta))

    # expressions
    def var(self, meta, children):
        time = children[1] if len(children) > 1 else None
        return S.Var(S.normalise_name(children[0]), time, self._loc(meta))

    def time(self, meta, children):
        return S.Time(str(children[0]), 0, self._loc(meta))

    def time_plus(self, meta, children):
        return S.Time(str(children[0]), int(children[1]), self._loc(meta))

    def time_minus(self, meta, children):
        return S.Time(str(children[0]), -int(children[1]), self._loc(meta))

    def number(self, meta, children):
        return S.Num(float(children[0]), self._loc(meta))

    def _bin(op):
        def rule(self, meta, children):
            return S.BinOp(op, children[0], children[1], self._loc(meta))
        return rule

    add, sub, mul, div = _bin("+"), _bin("-"), _bin("*"), _bin("/")

    def neg(self, meta, children):
        return S.Neg(children[0], self._loc(meta))

    def weight_apply(self, meta, children):
        tok, arg = children
        return S.Apply(S.normalise_name(tok), arg, self._loc(meta), _tok_loc(self.file, tok))

    def concat(self, meta, children):
        return S.Concat(tuple(children), self._loc(meta))

    def name(self, meta, children):
        return children[0]  # a bare callee token; `call` turns it into a name

    def call(self, meta, children):
        callee, *rest = children
        args = tuple(a for a in rest if not isinstance(a, tuple))
        kwargs = tuple(a for a in rest if isinstance(a, tuple))
        if isinstance(callee, Token):
            callee_loc = _tok_loc(self.file, callee)
            callee = S.normalise_name(callee)
        else:
            callee_loc = callee.loc
        return S.Call(callee, args, kwargs, self._loc(meta), callee_loc)

    def kwarg(self, meta, children):
        return (S.normalise_name(children[0]), children[1])
