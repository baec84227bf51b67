"""Bad input: every error names file:line:col, shows the line with a caret,
gives a hint where one helps, exits with status 1 and shows no traceback."""
import subprocess
import sys

import pytest

CELL = "cell A {{\n    input x\n    state h : H\n{body}\n}}\n"

# (name, cell body or whole file, line, col, message, hint, caret width)
CASES = [
    ("missing_paren", CELL.format(body="    h<t> = tanh(W x + b"), 4, 16,
     "`(` is never closed", "add the missing `)`", 1),
    ("stray_token", CELL.format(body="    h<t> = tanh(W x + b))"), 4, 25,
     "unexpected `)`", "there is a `)` with no `(` to close", 1),
    ("stray_word", CELL.format(body="    h<t> = tanh(W x) input"), 4, 22,
     "unexpected `input`", "starts a statement of its own", 5),
    ("unknown_function", CELL.format(body="    h<t> = tanhh(W x + b)"), 4, 12,
     "unknown function `tanhh`", "did you mean `tanh`?", 5),
    ("call_not_apply", CELL.format(body="    r = σ(Wr[h, x])\n    h<t> = tanh(U(r * h) + W x)"),
     5, 17, "unknown function `U`", "to apply a weight write `U[r * h]`", 1),
    ("no_equation", "cell A {\n    input x\n    state h, c : H\n    h<t> = tanh(W x + U h)\n}\n",
     3, 5, "state `c` has no `c<t> = ...` equation", "exactly one equation", None),
    ("two_equations", CELL.format(body="    h<t> = tanh(W x)\n    h<t> = tanh(U h)"), 5, 5,
     "a second `<t>` equation for state `h` (the first is at line 4)", "exactly one equation", 4),
    ("used_before", "cell A {\n    input x\n    state h, c : H\n    h<t> = tanh(W x + U c<t>)\n"
     "    c<t> = tanh(V x)\n}\n", 4, 25, "`c<t>` is used before its equation (line 5)",
     "`c` or `c<t-1>` is the previous value", 4),
    ("future", CELL.format(body="    h<t> = tanh(W x + U h<t+1>)"), 4, 26,
     "`h<t+1>` looks into the future", "bidirectional", 5),
    ("cycle", CELL.format(body="    p = q * 2\n    q = p + h\n    h<t> = tanh(W x + p)"), 4, 5,
     "cycle among intermediates: p → q → p", "use a state", 1),
    ("shape_conflict", CELL.format(body="    h<t> = tanh(W x + [h, x])"), 4, 5,
     "`h<t>` has size H, but its equation gives a vector of size H+X", None, None),
    ("add_conflict", CELL.format(body="    h<t> = tanh(W x) * (h + [h, x])"), 4, 25,
     "`+` of vectors of different sizes: H against H+X", None, None),
    ("misspelt", "cell A {\n    input x\n    state a, c : H\n    Γu = σ(Wu[a, x] + bu)\n"
     "    Γo = σ(Wo[a, x] + bo)\n    c_tilde = tanh(Wc[a, x] + bc)\n"
     "    c<t> = Γu * c_tlde + Γu * c\n    a<t> = Γo * tanh(c<t>)\n}\n", 7, 17,
     "`c_tlde` is not defined, so it would become a new parameter", "did you mean `c_tilde`?", 6),
    ("misspelt_gate", "cell A {\n    input x\n    state a, c : H\n    Γu = σ(Wu[a, x] + bu)\n"
     "    Γo = σ(Wo[a, x] + bo)\n    c~ = tanh(Wc[a, x] + bc)\n"
     "    c<t> = Γu * c~ + Γf * c\n    a<t> = Γo * tanh(c<t>)\n}\n", 7, 22,
     "`Γf` is not defined", "did you mean `Γu` or `Γo`?", 2),
    ("empty", "", 1, 1, "the file defines nothing", None, None),
    ("only_comments", "# nothing here\n\n", 1, 1, "the file defines nothing", None, None),
    ("missing_brace", "cell A {\n    input x\n    state h : H\n    h<t> = tanh(W x)\n", 4, 21,
     "unexpected end of file", "closing `}`", None),
]


@pytest.mark.parametrize("name,text,line,col,message,hint,width", CASES, ids=[c[0] for c in CASES])
def test_bad_input(tmp_path, run_cli, name, text, line, col, message, hint, width):
    f = tmp_path / f"{name}.seq"
    f.write_text(text, encoding="utf-8")
    code, out, err = run_cli("check", f)
    assert code == 1 and out == ""
    first, *rest = err.splitlines()
    assert first.startswith(f"{f}:{line}:{col}: error: "), err
    assert message in first, err
    if text.strip() and not text.lstrip().startswith("#"):
        src_line = text.splitlines()[line - 1]
        assert rest[0] == "    " + src_line
        caret = rest[1][4:]
        assert caret.index("^") == col - 1, err
        if width:
            assert caret.count("^") == width, err
    if hint:
        assert any(r.startswith("hint: ") and hint in r for r in rest), err
    assert "Traceback" not in err


def test_not_utf8(tmp_path, run_cli):
    f = tmp_path / "latin1.seq"
    f.write_bytes("cell A {\n    input x  # café\n}\n".encode("latin-1"))
    code, out, err = run_cli("check", f)
    assert code == 1
    assert err.startswith(f"{f}:2:19: error: the file is not UTF-8 text: byte 0xe9"), err
    assert "hint: save the file as UTF-8" in err and "Traceback" not in err


def test_missing_file(run_cli):
    code, out, err = run_cli("check", "no/such/file.seq")
    assert code == 1
    assert err.strip() == "error: no/such/file.seq: no such file"


def test_instantiation_conflict(tmp_path, run_cli):
    f = tmp_path / "tied.seq"
    f.write_text(CELL.format(body="    r = σ(Wr[h, x] + br)\n    h<t> = tanh(U[r * h] + tanh(x) + b)"))
    code, out, err = run_cli("check", f)
    assert code == 0 and "constraint  input size X = H" in out
    code, out, err = run_cli("gradcheck", f, "--hidden", 8, "--input", 3)
    assert code == 1 and out == ""
    assert err.startswith(f"{f}:5:5: error: cell A cannot take input size X = 3: its equations "
                          "require X = H, which is 8 here"), err
    assert "hint: instantiate it with input size 8" in err
    code, out, err = run_cli("gradcheck", f, "--hidden", 3, "--input", 3)
    assert code == 0, err


def test_unknown_cell_in_network(tmp_path, run_cli):
    f = tmp_path / "net.seq"
    f.write_text("network N {\n    input x\n    h = LSTN(H=8)(x)\n    output y<t> = softmax(W h<t>)\n}\n")
    code, out, err = run_cli("check", f)
    assert code == 1
    assert err.startswith(f"{f}:3:9: error: unknown cell `LSTN`") and "did you mean `LSTM`?" in err


def test_real_process_exit_status_and_no_traceback(tmp_path):
    f = tmp_path / "bad.seq"
    f.write_text(CELL.format(body="    h<t> = tanhh(W x)"))
    p = subprocess.run([sys.executable, "-m", "seqdsl", "check", str(f)], capture_output=True,
                       text=True)
    assert p.returncode == 1 and "unknown function `tanhh`" in p.stderr
    assert "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-m", "seqdsl", "--traceback", "check", str(f)],
                       capture_output=True, text=True)
    assert "Traceback" in p.stderr


def test_a_matched_paren_after_a_missing_operand_is_not_called_stray(tmp_path, run_cli):
    f = tmp_path / "operand.seq"
    f.write_text(CELL.format(body="    h<t> = tanh(W x + U h +)"), encoding="utf-8")
    code, out, err = run_cli("check", f)
    assert code == 1 and err.startswith(f"{f}:4:28: error: unexpected `)`; expected one of `(`")
    assert "no `(` to close" not in err
