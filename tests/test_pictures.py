"""`seqdsl graph --format svg|png|pdf`: pictures of step graphs drawn by
Graphviz, read back from the SVG it writes."""
import re
import shutil
import xml.etree.ElementTree as ET

import pytest

from seqdsl.ir.autodiff import backward, saved_values
from seqdsl.spec import load

LSTM = "seqdsl/lang/library/lstm.seq"
SVG = "{http://www.w3.org/2000/svg}"

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="Graphviz's `dot` program is not installed (apt install graphviz; CI installs it)")


def _text(el) -> str:
    """The text drawn inside `el`, its runs joined, spaces (and &#160;) collapsed."""
    runs = [t.text or "" for t in el.iter(f"{SVG}text")]
    return re.sub(r"\s+", " ", " ".join(runs).replace("\xa0", " ")).strip()


def _fill(el) -> str:
    """The fill of a node's outline (its first shape)."""
    for shape in el.iter():
        if shape.tag in (f"{SVG}path", f"{SVG}polygon", f"{SVG}ellipse"):
            return shape.get("fill")
    return ""


def _picture(run_cli, tmp_path, *args) -> dict:
    """Draw, and read the SVG back: nodes by id as (kinds, text, fill), edges."""
    out = tmp_path / "graph.svg"
    code, _, err = run_cli("graph", *args, "--format", "svg", "-o", out)
    assert code == 0, err
    root = ET.parse(out).getroot()
    nodes, edges = {}, []
    for g in root.iter(f"{SVG}g"):
        classes = (g.get("class") or "").split()
        if classes[:1] == ["node"]:
            nodes[g.find(f"{SVG}title").text] = (set(classes[1:]), _text(g), _fill(g))
        elif classes[:1] == ["edge"]:
            tail, head = g.find(f"{SVG}title").text.split("->")
            edges.append((set(classes[1:]), tail, head, g))
    return {"root": root, "nodes": nodes, "edges": edges}


def _by_name(pic) -> dict[str, tuple[set, str, str]]:
    """Value nodes by the name they show first (`Γu` of `Γu B×H sigmoid`)."""
    return {text.split()[0]: (kinds, text, fill) for kinds, text, fill in pic["nodes"].values()
            if text and "legend" not in kinds}


@needs_dot
def test_lstm_picture_names_every_gate_and_parameter_with_its_shape(run_cli, tmp_path):
    nodes = _by_name(_picture(run_cli, tmp_path, LSTM))
    for gate in ("Γu", "Γf", "Γo", "c̃"):  # as lstm.seq writes them
        assert "named" in nodes[gate][0] and nodes[gate][1].startswith(f"{gate} B×H")
    ct = load(LSTM).cell()
    assert set(ct.params) == {n for n, (k, _, _) in nodes.items() if "param" in k}
    for name, v in ct.params.items():
        assert nodes[name][1] == f"{name} {v.type_str()}"  # `Wu H×(H+X)`, `bu H`
    assert nodes["Wu"][1] == "Wu H×(H+X)"


@needs_dot
def test_node_kinds_look_different(run_cli, tmp_path):
    pic = _picture(run_cli, tmp_path, LSTM)
    nodes = _by_name(pic)
    kinds = {"x": "input", "a<t-1>": "state-prev", "c<t-1>": "state-prev",
             "a<t>": "state-new", "c<t>": "state-new", "Wu": "param", "Γu": "named",
             "linear": "temp"}  # an anonymous value shows its op first
    for name, kind in kinds.items():
        assert kind in nodes[name][0], name
    fills = {}
    for kinds_, _, fill in pic["nodes"].values():
        for k in kinds_ & set(kinds.values()):
            fills.setdefault(k, set()).add(fill)
    assert all(len(f) == 1 for f in fills.values()), fills  # one look per kind
    assert len({f.pop() for f in fills.values()}) == len(fills)  # and no two alike
    assert {"a<t>", "c<t>"} == {n for n, (k, _, _) in nodes.items() if "output" in k}
    legend = [t for k, t, _ in pic["nodes"].values() if "legend" in k]
    assert len(legend) == 1 and "previous state" in legend[0] and "parameter" in legend[0]
    fonts = {t.get("font-family") for t in pic["root"].iter(f"{SVG}text")}
    assert fonts == {"DejaVu Sans"}  # a font with Greek, on every label


@needs_dot
def test_recurrence_edges_run_from_each_new_state_to_its_previous_value(run_cli, tmp_path):
    pic = _picture(run_cli, tmp_path, LSTM)
    name = {node_id: text.split()[0] for node_id, (_, text, _) in pic["nodes"].items() if text}
    loops = [(name[tail], name[head], g) for kinds, tail, head, g in pic["edges"]
             if "recurrence" in kinds]
    assert sorted((t, h) for t, h, _ in loops) == [("a<t>", "a<t-1>"), ("c<t>", "c<t-1>")]
    for _, _, g in loops:
        assert g.find(f"{SVG}path").get("stroke-dasharray")  # dashed


@needs_dot
def test_backward_picture_marks_what_it_reads_from_the_tape(run_cli, tmp_path):
    pic = _picture(run_cli, tmp_path, LSTM, "--backward")
    nodes = _by_name(pic)
    fwd = load(LSTM).cell().graph
    saved = {v.name for v in saved_values(fwd, backward(fwd))}
    assert {"Γu", "c̃", "t11", "c<t-1>"} <= saved
    assert saved == {n for n, (k, _, _) in nodes.items() if "tape" in k}
    assert {"d_a<t>", "d_c<t>"} == {n for n, (k, _, _) in nodes.items() if "grad-in" in k}
    assert "param-grad" in nodes["d_Wu"][0] and nodes["d_Wu"][1].startswith("d_Wu H×(H+X)")
    reads = [e for e in pic["edges"] if "tape-read" in e[0]]
    assert reads and {pic["nodes"][t][1].split()[0] for _, t, _, _ in reads} == saved
    assert {_fill_of(pic, "tape")} != {_fill_of(pic, "grad-in")}


def _fill_of(pic, kind: str) -> str:
    (fill,) = {f for k, _, f in pic["nodes"].values() if kind in k}
    return fill


@needs_dot
def test_sizes_can_be_shown_as_numbers(run_cli, tmp_path):
    nodes = _by_name(_picture(run_cli, tmp_path, LSTM, "--hidden", 8, "--input", 5))
    assert nodes["Wu"][1] == "Wu 8×13" and nodes["c<t>"][1].startswith("c<t> B×8")


@needs_dot
def test_a_network_is_drawn_one_cluster_per_step_graph(run_cli, tmp_path):
    pic = _picture(run_cli, tmp_path, "seqdsl/lang/library/tagger.seq")
    clusters = [_text(g) for g in pic["root"].iter(f"{SVG}g") if g.get("class") == "cluster"]
    assert clusters == ["h.0.fwd, h.0.bwd: cell LSTM (H=64, X=X)", "h.1: cell LSTM (H=64, X=128)",
                        "output ŷ<t>", "loss of ŷ: cross_entropy"]
    texts = [t for _, t, _ in pic["nodes"].values()]
    assert texts.count("Wu 64×(64+X)") == 1 and texts.count("Wu 64×192") == 1
    assert sum(t.startswith("ŷ B×Y") for t in texts) == 1


@needs_dot
@pytest.mark.parametrize("fmt, magic", [("png", b"\x89PNG\r\n\x1a\n"), ("pdf", b"%PDF-")])
def test_png_and_pdf_are_written_with_their_signatures(run_cli, tmp_path, fmt, magic):
    out = tmp_path / f"lstm.{fmt}"
    code, stdout, err = run_cli("graph", LSTM, "--format", fmt, "-o", out)
    assert code == 0 and stdout == "" and err == f"wrote {out}\n"
    assert out.read_bytes().startswith(magic) and out.stat().st_size > 10_000
    also = tmp_path / f"backward.{fmt}"  # the format from the suffix of -o
    assert run_cli("graph", LSTM, "--backward", "-o", also)[0] == 0
    assert also.read_bytes().startswith(magic)


def test_a_binary_picture_needs_a_file(run_cli):
    code, out, err = run_cli("graph", LSTM, "--format", "png")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "give a file to write it to with -o" in err


def test_without_the_dot_program_the_error_says_how_to_install_it(run_cli, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there: `dot` is not found
    code, out, err = run_cli("graph", LSTM, "--format", "svg", "-o", tmp_path / "x.svg")
    assert code == 1 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    for install in ("apt install graphviz", "brew install graphviz",
                    "conda install -c conda-forge graphviz", "--format dot"):
        assert install in err
    assert not (tmp_path / "x.svg").exists()
    code, out, _ = run_cli("graph", LSTM, "--format", "dot")  # DOT text needs no `dot`
    assert code == 0 and out.startswith("digraph LSTM {")
