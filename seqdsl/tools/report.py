"""One self-contained HTML page out of a report's sections: text (escaped,
in <pre>) and pictures (inline SVG). No script, stylesheet, font or image is
fetched: the file opens as it is, offline."""
from __future__ import annotations

import html
import re
from dataclasses import dataclass

STYLE = """
body { font-family: "DejaVu Sans", sans-serif; margin: 2em auto; max-width: 70em;
       color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em;
     border-bottom: 1px solid #ccc; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em;
      line-height: 1.35; }
.svg { overflow-x: auto; } .svg svg { max-width: 100%; height: auto; }
.note { color: #844; }
"""


@dataclass
class Section:
    title: str
    kind: str  # "text" (shown as written) or "svg" (a picture Graphviz drew)
    body: str
    note: str = ""  # a line under the title, e.g. why a picture is DOT text instead


def page(title: str, sections: list[Section]) -> str:
    """The whole HTML document; every piece of text escaped."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title>", f"<style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.note:
            parts.append(f'<p class="note">{html.escape(s.note)}</p>')
        if s.kind == "svg":
            parts.append(f'<div class="svg">{inline_svg(s.body)}</div>')
        else:
            parts.append(f"<pre>{html.escape(s.body)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def numbered(source: str) -> str:
    """Source text with line numbers, as an editor shows it."""
    lines = source.splitlines()
    width = len(str(len(lines)))
    return "\n".join(f"{i:>{width}}  {line}" for i, line in enumerate(lines, 1))


def inline_svg(svg: str) -> str:
    """Graphviz's SVG without its XML prolog, doctype and comments, ready to
    sit inside HTML; anything that could run or fetch is refused."""
    svg = re.sub(r"<\?xml[^>]*\?>|<!DOCTYPE[^>]*>|<!--.*?-->", "", svg, flags=re.S).strip()
    if re.search(r"<script|\son\w+\s*=|xlink:href\s*=\s*\"(?!#)|<image", svg, re.I):
        raise ValueError("an SVG with scripts, handlers or external links is not inlined")
    return svg
