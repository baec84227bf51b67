"""Text → syntax tree. The only module that imports lark."""
from __future__ import annotations

import math
import os
import unicodedata
from functools import lru_cache
from importlib import resources

from lark import Lark, Token, Tree, v_args
from lark.visitors import Transformer_NonRecursive
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from . import syntax as S
from ..errors import Loc, SeqError, source_lines

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
_KEYWORDS = ("cell", "network", "input", "state", "param", "output", "repeat")


class _Brackets:
    """Post-lexer: newlines end statements, except inside ( ) and [ ].

    It remembers the brackets still open so that a missing `)` is reported
    where it was opened, not at the far-away token where parsing gave up,
    and the last two tokens, to word errors about what came before.
    Names and numbers are checked here, as they are read (see `_check_token`).
    """

    always_accept = ("_NL",)

    def __init__(self):
        self.open: list[Token] = []
        self.last: list[Token] = []  # the last two tokens passed on
        self.stray: Token | None = None  # a closing bracket with none open
        self.file = "<string>"
        self.source = ""

    def process(self, stream):
        self.open = []
        self.last = []
        self.stray = None
        for tok in stream:
            _check_token(tok, self.file, self.source)
            if tok.type in ("LPAR", "LSQB"):
                self.open.append(tok)
            elif tok.type in ("RPAR", "RSQB"):
                if self.open:
                    self.open.pop()
                elif self.stray is None:
                    self.stray = tok
            elif tok.type == "_NL" and self.open:
                continue
            self.last = [*self.last[-1:], tok]
            yield tok


@lru_cache(maxsize=1)
def _parser() -> tuple[Lark, _Brackets]:
    post = _Brackets()
    grammar = resources.files("seqdsl.lang").joinpath("seq.lark").read_text("utf-8")
    lark = Lark(grammar, parser="lalr", propagate_positions=True, postlex=post,
                maybe_placeholders=False)
    return lark, post


def parse(source: str, file: str = "<string>") -> S.Module:
    """Parse .seq source text into a syntax tree; raises SeqError on bad input.

    A leading byte-order mark is dropped (the returned module's `source` is
    the text without it, so columns count as an editor shows them). Input
    beyond the limits in `syntax` (size, name length, nesting, numbers) is
    refused with a SeqError at the place it exceeds them: nothing here or in
    later stages recurses deeper than `MAX_DEPTH` levels of the tree.
    """
    source = source.removeprefix("\ufeff")
    _check_size(source, file)
    if not source.strip() or all(
            not ln.strip() or ln.lstrip().startswith("#") for ln in source_lines(source)):
        raise SeqError("the file defines nothing: expected a `cell` or `network` definition",
                       Loc(file, 1, 1), source=source)
    lark, post = _parser()
    post.file, post.source = file, source
    text = source if source.endswith("\n") else source + "\n"
    try:
        tree = lark.parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(e, post, file, source) from None
    _check_depth(tree, file, source)
    defs = _ToSyntax(file).transform(tree).children
    return S.Module(file=file, source=source, definitions=tuple(defs))


def read_source(path: str) -> str:
    """Read a spec file as UTF-8, with clear errors for a missing or non-UTF-8 file."""
    if not os.path.exists(path):
        raise SeqError(f"{path}: no such file")
    if os.path.isdir(path):
        raise SeqError(f"{path}: is a directory, not a .seq file")
    with open(path, "rb") as f:  # no more than the size limit allows, whatever the file's size
        data = f.read(4 * S.MAX_SOURCE_CHARS + 1)
    if len(data) > 4 * S.MAX_SOURCE_CHARS:  # more characters than the limit, however decoded
        _check_size(data.decode("utf-8", errors="replace"), path)
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        before = data[:e.start].decode("utf-8")
        line = before.count("\n") + 1
        col = len(before) - (before.rfind("\n") + 1) + 1
        raise SeqError(f"the file is not UTF-8 text: byte 0x{data[e.start]:02x} cannot be decoded",
                       Loc(path, line, col), hint="save the file as UTF-8",
                       source=data.decode("utf-8", errors="replace")) from None


def parse_file(path: str) -> S.Module:
    return parse(read_source(path), path)


# ---- limits -------------------------------------------------------------------

def _check_size(source: str, file: str) -> None:
    if len(source) <= S.MAX_SOURCE_CHARS:
        return
    before = source[:S.MAX_SOURCE_CHARS]
    line = before.count("\n") + 1
    col = S.MAX_SOURCE_CHARS - (before.rfind("\n") + 1) + 1
    raise SeqError(f"the spec is too large: more than {S.MAX_SOURCE_CHARS:,} characters "
                   "(the most one spec may have); this is where the limit is reached",
                   Loc(file, line, col), hint="is it the right file? Real specs are a few "
                   "thousand characters", source=source)


def _check_token(tok: Token, file: str, source: str) -> None:
    """Names of sane length that are not keywords; numbers within range."""
    def err(message, hint=None):
        return SeqError(message, Loc(file, tok.line, tok.column), hint=hint, source=source)

    if tok.type == "NAME":
        if len(tok) > S.MAX_NAME_CHARS:
            raise err(f"a name of {len(tok):,} characters; a name has at most "
                      f"{S.MAX_NAME_CHARS}", hint="use a shorter name")
        if tok in _KEYWORDS:
            raise _keyword_as_name(tok, file, source)
    elif tok.type == "INT" and (len(tok) > len(str(S.MAX_INT)) or int(tok) > S.MAX_INT):
        raise err(f"{_shown_number(tok)} is too large: whole numbers in sizes and time "
                  f"indices are at most {S.MAX_INT:,}")
    elif tok.type == "NUMBER" and not math.isfinite(float(tok)):
        raise err(f"{_shown_number(tok)} is too large for a number (the largest is about "
                  "1.8e308)")


def _keyword_as_name(tok: Token, file: str, source: str) -> SeqError:
    return SeqError(f"`{tok}` is a keyword and cannot be used as a name",
                    Loc(file, tok.line, tok.column, tok.line, tok.column + len(tok)),
                    hint="the keywords " + ", ".join(f"`{k}`" for k in _KEYWORDS)
                    + " start statements and definitions; choose another name", source=source)


def _shown_number(text: str) -> str:
    return f"`{text}`" if len(text) <= 20 else f"`{text[:12]}…` ({len(text):,} characters)"


def _check_depth(tree: Tree, file: str, source: str) -> None:
    """Refuse a tree nested deeper than MAX_DEPTH, so that the stages after
    the parser can walk it recursively. Iterative: the tree may be deep."""
    todo = [(tree, 1)]
    while todo:
        node, depth = todo.pop()
        if depth > S.MAX_DEPTH:
            m = node.meta  # every node holds a token, so it has a position
            raise SeqError(f"nested too deeply: more than {S.MAX_DEPTH} levels", Loc(
                file, m.line, m.column, m.end_line, m.end_column), source=source,
                hint="each term of a sum or product, each `-` and each bracket nests one "
                "level deeper; name parts of the expression as intermediates "
                "(`s = a + b + c`, then `s + d`)")
        todo += [(c, depth + 1) for c in node.children if isinstance(c, Tree)]


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
        ch = source[e.pos_in_stream] if e.pos_in_stream < len(source) else "\n"
        return SeqError(f"unexpected character {_shown_char(ch)}", Loc(file, e.line, e.column),
                        hint=_char_hint(ch), source=source)
    tok = getattr(e, "token", None)
    if isinstance(e, UnexpectedEOF) or tok is None or tok.type == "$END":
        if unclosed is not None:
            return _unclosed(unclosed, file, source, None)
        lines = source_lines(source)
        loc = Loc(file, len(lines), len(lines[-1]) + 1 if lines else 1)
        return SeqError("unexpected end of file" + _expected(getattr(e, "expected", ())), loc,
                        hint="is a closing `}` missing?", source=source)
    assert isinstance(e, UnexpectedToken)
    # The lexer may refuse `tok` before passing it on: then it is not among the last two.
    before = [t for t in post.last if t.start_pos < tok.start_pos][-1:]
    if before and before[0].type != "NAME" and before[0] in _KEYWORDS \
            and tok.type in ("EQUAL", "LESSTHAN"):  # `output = ...`, `state<t> = ...`
        return _keyword_as_name(before[0], file, source)
    if unclosed is not None and (tok.line > unclosed.line or tok.type in ("RBRACE", "_NL")):
        return _unclosed(unclosed, file, source, tok)
    line, col = tok.line, tok.column
    if tok.type == "_NL":  # point just past the last token on the line, not at the next line
        lines = source_lines(source)
        prev = lines[e.line - 1] if e.line - 1 < len(lines) else ""
        line, col = e.line, e.column
        if prev[col - 1:col] == "\n" or col > len(prev):
            col = len(prev.rstrip()) + 1
    end = col + len(str(tok)) if tok.type != "_NL" else col + 1
    hint = None
    if str(tok) in _KEYWORDS:
        hint = f"`{tok}` starts a statement of its own; put it on a new line"
    elif tok.type == "RPAR" and post.stray is not None and post.stray.start_pos == tok.start_pos:
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


def _shown_char(ch: str) -> str:
    """`ch` in backquotes, or its code point and name when it is invisible."""
    if ch.isprintable() and unicodedata.category(ch) not in ("Cf", "Zs"):
        return f"`{ch}`"
    return f"U+{ord(ch):04X} ({unicodedata.name(ch, 'a control character')})"


def _char_hint(ch: str) -> str | None:
    if not ch.isprintable() or unicodedata.category(ch) == "Cf":
        return "an invisible character (editors may not show it): delete it"
    if ch == "{":
        return "`{` opens a cell or network body: `cell Name { ... }`"
    if ch in "^~":
        return "`~` and `^` spell marks at the end of a name (`c~` is `c̃`, `y^` is `ŷ`)"
    return None


# ---- parse tree → syntax tree -------------------------------------------------

def _size(tok: Token) -> str | int:
    """A declared size: a number, or a symbol such as `H` or `M`."""
    return int(tok) if tok.type == "INT" else str(tok)


def _tok_loc(file: str, tok: Token) -> Loc:
    return Loc(file, tok.line, tok.column, tok.end_line, tok.end_column)


@v_args(meta=True)
class _ToSyntax(Transformer_NonRecursive):
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
        size = _size(children[1]) if len(children) > 1 else None
        return S.StateDecl(children[0], size, self._loc(meta))

    def _param(self, meta, children, value, init):
        name, *rest = children
        size = _size(rest[0]) if rest and isinstance(rest[0], Token) else None
        return S.ParamDecl(S.normalise_name(name), value, init, self._loc(meta), size)

    def param_value(self, meta, children):
        return self._param(meta, children[:-1], children[-1], None)

    def param_init(self, meta, children):
        return self._param(meta, children[:-1], None, children[-1])

    def param_plain(self, meta, children):
        return self._param(meta, children, None, None)

    def output_decl(self, meta, children):
        target, *rest = children
        size = _size(rest.pop(0)) if rest and isinstance(rest[0], Token) else None
        return S.OutputDecl(target, rest[0] if rest else None, self._loc(meta), size)

    def equation(self, meta, children):
        size = _size(children[1]) if len(children) == 3 else None
        return S.Equation(children[0], children[-1], self._loc(meta), size)

    def repeat(self, meta, children):
        count, *body = children
        return S.Repeat(int(count), tuple(body), self._loc(meta))

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

    def matrix_apply(self, meta, children):
        return S.MatApply(children[0], children[1], self._loc(meta))

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
