"""Every shipped spec and every example of the language sketch parses and checks."""
import pytest

from conftest import SPECS, sketch_examples
from seqdsl.spec import library_cells, load, loads

EXAMPLES = sketch_examples()


def test_sketch_has_its_eight_examples():
    assert len(EXAMPLES) == 8
    assert sum("cell " in e for e in EXAMPLES) == 4


@pytest.mark.parametrize("i", range(len(EXAMPLES)))
def test_sketch_example_checks_unchanged(i):
    spec = loads(EXAMPLES[i], f"sketch-{i}.seq")
    assert len(spec.cells) + len(spec.networks) == 1
    assert spec.warnings == []


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_shipped_spec_checks(path):
    spec = load(str(path))
    assert spec.cells or spec.networks
    assert spec.warnings == []
    assert path.read_text("utf-8").startswith("#"), "each spec starts with a comment saying what it is"


def test_library_has_the_shipped_cells():
    assert {"RNN", "GRU", "TorchGRU", "LSTM", "PeepholeLSTM"} <= set(library_cells())


def test_shipped_specs_cover_the_sketch_networks():
    names = {n for p in SPECS for n in load(str(p)).networks}
    assert names == {"Tagger", "Sentiment", "CharLM", "Translate"}


def test_lstm_parameters_and_shapes():
    ct = load("seqdsl/lang/library/lstm.seq").cell("LSTM")
    shapes = {n: "×".join(s.paren() for s in v.shape) for n, v in ct.params.items()}
    assert shapes == {"Wu": "H×(H+X)", "Wf": "H×(H+X)", "Wo": "H×(H+X)", "Wc": "H×(H+X)",
                      "bu": "H", "bf": "H", "bo": "H", "bc": "H"}
    assert ct.inits["bf"] == ("const", 1.0)
    assert ct.output == "a"


def test_network_shapes():
    tagger = load("seqdsl/lang/library/tagger.seq").networks["Tagger"]
    shapes = {n: "×".join(s.paren() for s in sh) for n, sh in tagger.params.items()}
    assert shapes["h.0.fwd.Wu"] == "64×(64+X)"
    assert shapes["h.0.bwd.Wu"] == "64×(64+X)"
    assert shapes["h.1.Wu"] == "64×192"  # reads both directions: 2 × 64, plus its own 64
    assert shapes["Wy"] == "Y×64" and shapes["by"] == "Y"
    assert tagger.kind == "many-to-many"
    senti = load("seqdsl/lang/library/sentiment.seq").networks["Sentiment"]
    assert senti.kind == "many-to-one" and not senti.heads[0].per_step
    assert {n.split(".")[1] for n in senti.params if n.startswith("h.")} == {"0", "1"}
    tr = load("seqdsl/lang/library/translate.seq").networks["Translate"]
    assert tr.kind == "encoder-decoder" and tr.sequences["d"].init == "e"
    assert [k for _, k, _ in load("seqdsl/lang/library/charlm.seq").networks["CharLM"].inputs] == ["tokens"]
