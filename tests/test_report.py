"""`seqdsl report`: one self-contained HTML page about a cell or a network,
read back with the standard library's HTML parser."""
from __future__ import annotations

import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LSTM = ROOT / "seqdsl/lang/library/lstm.seq"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="Graphviz's `dot` program is not installed (CI installs it)")


class Page(HTMLParser):
    """The tags, their attributes, the text of each section (by its h2) and
    the text inside SVGs."""

    def __init__(self, html: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.sections: dict[str, str] = {}
        self.svg_text: list[str] = []
        self._heading, self._in_h2, self._svg = None, False, 0
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_h2 = self._in_h2 or tag == "h2"
        self._svg += tag == "svg"

    def handle_endtag(self, tag):
        self._in_h2 = self._in_h2 and tag != "h2"
        self._svg -= tag == "svg"

    def handle_data(self, data):
        if self._in_h2:
            self._heading = data
            self.sections[data] = ""
        elif self._heading is not None:
            self.sections[self._heading] += data
        if self._svg:
            self.svg_text.append(data)


def _report(run_cli, tmp_path, *args) -> tuple[str, Page]:
    out = tmp_path / "report.html"
    code, stdout, err = run_cli("report", *args, "-o", out)
    assert code == 0, err
    assert stdout == f"wrote {out}\n"
    html = out.read_text("utf-8")
    return html, Page(html)


def _self_contained(page: Page) -> None:
    """Nothing to fetch: no scripts, stylesheets, images or frames, and no
    attribute pointing outside the page."""
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "img", "iframe", "object", "embed"), tag
        for name, value in attrs.items():
            assert not (name in ("src", "href", "xlink:href") and not value.startswith("#")), \
                (tag, name, value)


@needs_dot
def test_a_cells_page_has_its_source_parameters_pictures_and_kernels(run_cli, tmp_path):
    html, page = _report(run_cli, tmp_path, LSTM, "--cell", "LSTM")
    _self_contained(page)
    titles = list(page.sections)
    assert titles[0] == str(LSTM)
    assert "Γu = σ(Wu[a<t-1>, x<t>] + bu)" in page.sections[str(LSTM)]
    assert "Wu  H×(H+X)" in page.sections["What check infers"].replace("   ", "  ")
    assert [t for t, a in page.tags if t == "svg"].__len__() == 2
    for name in ("Γu", "Γf", "Γo", "c̃", "a<t-1>", "c<t>"):
        assert name in page.svg_text, name
    assert any("d_" in t for t in page.svg_text)  # the backward step's gradients
    compiled = page.sections["What compile makes of it"]
    assert "FLOPs" in compiled and "source" in compiled
    assert "def forward(" in page.sections["The generated Numba source"]
    assert "def backward(" in page.sections["The generated Numba source"]


@needs_dot
def test_a_networks_page_has_its_layers_and_each_cells_kernels(run_cli, tmp_path):
    _, page = _report(run_cli, tmp_path, ROOT / "seqdsl/lang/library/sentiment.seq",
                      "--size", "X=5", "--size", "Y=3")
    _self_contained(page)
    assert "h = stack(GRU(H=64), depth=2)   → 64 per step" in page.sections["What check infers"]
    kernels = [t for t in page.sections if t.startswith("The generated Numba source of layer")]
    assert kernels == ["The generated Numba source of layer h.0 (GRU)",
                       "The generated Numba source of layer h.1 (GRU)"]


def test_what_the_user_wrote_is_text_never_markup(run_cli, tmp_path):
    spec = tmp_path / "lstm.seq"
    spec.write_text("# <script>alert(1)</script> & <b>bold</b>\n" + LSTM.read_text("utf-8"),
                    "utf-8")
    html, page = _report(run_cli, tmp_path, spec, "--cell", "LSTM")
    assert "<script" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;" in html
    assert "<script>alert(1)</script>" in page.sections[str(spec)]  # as text, once parsed


def test_without_dot_the_page_has_the_dot_text_and_says_how_to_draw_it(run_cli, tmp_path,
                                                                         monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    html, page = _report(run_cli, tmp_path, LSTM, "--cell", "LSTM")
    assert not any(t == "svg" for t, _ in page.tags)
    assert "digraph LSTM {" in page.sections["The step graph"]
    assert "apt install graphviz" in html and "brew install graphviz" in html


def test_bad_arguments_are_one_line_errors(run_cli, tmp_path):
    code, out, err = run_cli("report", LSTM, "--cell", "GRU9", "-o", tmp_path / "r.html")
    assert code == 1 and "Traceback" not in err and err.startswith("error: ")
    code, out, err = run_cli("report", LSTM, "--cell", "LSTM", "-o", tmp_path / "no" / "r.html")
    assert code == 1 and "cannot write" in err and "Traceback" not in err


@needs_dot
def test_the_page_renders_in_a_browser(run_cli, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no headless Chromium here to take a screenshot with")
    import subprocess
    _report(run_cli, tmp_path, LSTM, "--cell", "LSTM")
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox",
                    f"--screenshot={shot}", "--window-size=1200,900",
                    (tmp_path / "report.html").as_uri()], check=True, timeout=120,
                   env={**os.environ, "HOME": str(tmp_path)}, capture_output=True)
    from matplotlib.image import imread
    pixels = imread(shot)
    assert pixels.std() > 0.01  # not a blank page
