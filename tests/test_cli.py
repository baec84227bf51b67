"""The command line, as a user runs it."""
import subprocess
import sys

import pytest

from seqdsl.errors import SeqError


def test_check_lists_inferred_parameters(run_cli):
    code, out, err = run_cli("check", "seqdsl/lang/library/lstm.seq")
    assert code == 0 and err == ""
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()
            if line.startswith("    ")}
    for g in "ufoc":
        assert rows[f"W{g}"][:2] == ["H×(H+X)", "weight"]
        assert rows[f"b{g}"][:2] == ["H", "vector"]
    assert rows["bf"][2:] == ["=", "1"]
    assert out.splitlines()[-1] == "ok: 1 cell(s), 0 network(s), 0 warnings"


def test_check_a_network(run_cli):
    code, out, _ = run_cli("check", "seqdsl/lang/library/translate.seq")
    assert code == 0
    assert "network Translate" in out and "encoder-decoder" in out
    assert "d = LSTM(H=128, init=e<T>)   → 128 per step" in out
    # `input y` has the symbol Y, so the head's classes are Y2
    assert any(line.split()[:2] == ["Wy", "Y2×128"] for line in out.splitlines())


def test_check_warnings_go_to_stderr_with_positions(tmp_path, run_cli):
    f = tmp_path / "w.seq"
    f.write_text("cell C {\n    input x\n    state h : H\n    g = tanh(W x)\n    h<t> = tanh(U h + V x)\n}\n")
    code, out, err = run_cli("check", f)
    assert code == 0
    assert err.strip() == f"{f}:4:5: warning: intermediate `g` is defined but never used"
    assert out.splitlines()[-1].endswith("1 warning")


def test_graph_text_and_backward(run_cli):
    code, out, _ = run_cli("graph", "seqdsl/lang/library/rnn.seq")
    assert code == 0 and out.splitlines()[0] == "graph RNN"
    assert "  a<t>: B×H = tanh(t4)" in out.splitlines()
    code, out, _ = run_cli("graph", "seqdsl/lang/library/rnn.seq", "--backward")
    assert out.splitlines()[0] == "graph RNN.backward"
    assert "  d_Waa: H×H = outer[of=Waa](d_t4, a<t-1>)" in out.splitlines()
    assert out.splitlines()[-1] == "  outputs d_x, d_a<t-1>, d_Waa, d_Wax, d_ba"


def test_graph_dot_and_cell_selection(run_cli):
    code, out, _ = run_cli("graph", "seqdsl/lang/library/tagger.seq", "--cell", "LSTM", "--format", "dot")
    assert code == 0 and out.startswith('digraph LSTM {') and out.rstrip().endswith("}")
    code, out, _ = run_cli("graph", "seqdsl/lang/library/tagger.seq")  # its only network
    assert code == 0 and out.startswith("# h.0.fwd, h.0.bwd: cell LSTM (H=64, X=X)\ngraph LSTM")
    code, _, err = run_cli("graph", "seqdsl/lang/library/lstm.seq", "--cell", "Nope")
    assert code == 1 and "has no cell `Nope`" in err


def test_gradcheck_passes_and_can_fail(run_cli):
    code, out, _ = run_cli("gradcheck", "seqdsl/lang/library/gru.seq", "--hidden", 5, "--input", 2)
    assert code == 0
    assert out.splitlines()[0].startswith("gradcheck GRU (H=5, X=2; T=5, B=3, lengths")
    assert out.splitlines()[-1] == "ok: all 8 gradients within 1e-06"
    code, out, _ = run_cli("gradcheck", "seqdsl/lang/library/gru.seq", "--tolerance", "0")
    assert code == 1 and out.splitlines()[-1].startswith("FAILED: 8 of 8 gradients not within 0")


def test_gradcheck_size_arguments(tmp_path, run_cli):
    f = tmp_path / "k.seq"
    f.write_text("cell C {\n    input x\n    state h : K\n    h<t> = tanh(W[h, x])\n}\n")
    code, out, err = run_cli("gradcheck", f, "--size", "K=3")
    assert code == 0 and "(K=3, X=3;" in out, err
    code, out, err = run_cli("gradcheck", f, "--size", "K=three")
    assert code == 2 and "expected NAME=N with N a positive whole number" in err


def test_size_for_a_symbol_the_cell_lacks_is_warned_about(run_cli):
    code, out, err = run_cli("gradcheck", "seqdsl/lang/library/rnn.seq", "--size", "Q=5")
    assert code == 0 and "(H=4, X=3;" in out
    assert err == "warning: --size Q=5: cell RNN has no size `Q` (its sizes: H, X); ignored\n"


@pytest.mark.parametrize("args,argument", [
    (["--tolerance", "-1"], "--tolerance"), (["--tolerance", "nan"], "--tolerance"),
    (["--tolerance", "inf"], "--tolerance"), (["--tolerance", "1e999"], "--tolerance"),
    (["--hidden", "0"], "--hidden"), (["--hidden", "-3"], "--hidden"),
    (["--hidden", "1e9"], "--hidden"), (["--hidden", "9" * 40], "--hidden"),
    (["--input", "²"], "--input"), (["--steps", "0"], "--steps"), (["--batch", "x"], "--batch"),
    (["--seed", "-1"], "--seed"), (["--size", "K"], "--size"), (["--size", "K=0"], "--size"),
    (["--size", "=3"], "--size"),
])
def test_bad_argument_values_are_one_line_usage_errors(run_cli, args, argument):
    code, out, err = run_cli("gradcheck", "seqdsl/lang/library/rnn.seq", *args)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.splitlines()[-1].startswith(f"seqdsl gradcheck: error: argument {argument}"), err


def test_a_size_given_twice_is_an_error(run_cli):
    code, _, err = run_cli("gradcheck", "seqdsl/lang/library/rnn.seq", "--size", "H=3", "--size", "H=4")
    assert code == 1 and err.startswith("error: --size H= given twice (3 and 4)")


@pytest.mark.parametrize("where", ["before", "after"])
def test_traceback_is_accepted_before_or_after_the_command(run_cli, where):
    args = ["check", "no/such/file.seq"]
    args = ["--traceback", *args] if where == "before" else [*args, "--traceback"]
    with pytest.raises(SeqError, match="no such file"):
        run_cli(*args)
    code, _, err = run_cli("check", "no/such/file.seq")
    assert code == 1 and err.startswith("error: no/such/file.seq: no such file")


def test_an_internal_error_is_one_line_without_traceback(run_cli, monkeypatch):
    from seqdsl.cli import check

    def broken(args):
        raise RuntimeError("boom")
    monkeypatch.setattr(check, "run", broken)
    code, out, err = run_cli("check", "seqdsl/lang/library/rnn.seq")
    assert code == 1 and out == ""
    assert err == ("error: internal error (RuntimeError: boom); rerun with --traceback to see "
                   "where, and please report it\n")
    with pytest.raises(RuntimeError, match="boom"):
        run_cli("check", "seqdsl/lang/library/rnn.seq", "--traceback")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_gradcheck_fails_on_nan_gradients(tmp_path, run_cli):
    """NaN in the derived gradient and in the differences is a failure,
    not `0.00e+00 ok`."""
    f = tmp_path / "nan.seq"
    f.write_text("cell Broken {\n    input x\n    state h : H\n    h<t> = log(-exp(W[h, x]))\n}\n")
    code, out, _ = run_cli("gradcheck", f)
    assert code == 1
    assert [line.split()[1:] for line in out.splitlines()[2:5]] == [["not", "finite", "FAIL"]] * 3
    assert out.splitlines()[-1] == "FAILED: 3 of 3 gradients not within 1e-06: W, x, h<0>"


def test_gradcheck_in_float32_uses_its_own_step_and_tolerance(run_cli):
    code, out, err = run_cli("gradcheck", "seqdsl/lang/library/gru.seq", "--dtype", "float32")
    assert code == 0, out + err
    assert "; float32, numpy, central differences)" in out.splitlines()[0]
    assert out.splitlines()[-1] == "ok: all 8 gradients within 0.01"


@pytest.mark.parametrize("cmd", ["check", "graph", "gradcheck", "search"])
def test_help(cmd):
    p = subprocess.run([sys.executable, "-m", "seqdsl", cmd, "--help"], capture_output=True,
                       text=True)
    assert p.returncode == 0 and "usage: seqdsl " + cmd in p.stdout


def test_no_command_prints_help():
    p = subprocess.run([sys.executable, "-m", "seqdsl"], capture_output=True, text=True)
    assert p.returncode == 2 and "check" in p.stdout and "gradcheck" in p.stdout


def test_network_commands(run_cli, tmp_path, monkeypatch):
    """--network on check, graph, gradcheck and compile; --cell naming a
    network says it is one."""
    monkeypatch.setenv("SEQDSL_CACHE_DIR", str(tmp_path / "cache"))
    f = "seqdsl/lang/library/translate.seq"
    code, out, _ = run_cli("check", f, "--network", "Translate")
    assert code == 0 and out.startswith("network Translate") and "cell " not in out
    code, out, _ = run_cli("graph", f, "--network", "Translate", "--backward")
    titles = [line for line in out.splitlines() if line.startswith("# ")]
    assert titles == ["# e: cell LSTM (H=128, X=X)", "# d: cell LSTM (H=128, X=Y)",
                      "# output ŷ<t>", "# loss of ŷ: cross_entropy"]
    assert "graph ŷ.cross_entropy.backward" in out and "log_softmax_vjp" in out
    code, out, _ = run_cli("gradcheck", f, "--entries", 2, "--steps", 3, "--size", "Y2=4")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("gradcheck Translate (X=3, Y=3, Y2=4; T=3, B=3")
    assert lines[-1] == "ok: all 18 gradients within 1e-06"
    code, _, err = run_cli("gradcheck", f, "--cell", "Translate")
    assert code == 1 and "`Translate` in seqdsl/lang/library/translate.seq is a network" in err
    code, _, err = run_cli("gradcheck", f, "--hidden", 8)
    assert code == 1 and "network Translate has its hidden sizes in its spec" in err
    code, out, _ = run_cli("compile", "seqdsl/lang/library/sentiment.seq", "--size", "X=2")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("compiled network Sentiment (X=2, Y=3, float32)")
    assert lines[1].split()[:2] == ["h.0", "GRU"] and lines[2].split()[:2] == ["h.1", "GRU"]
