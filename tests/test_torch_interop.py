"""PyTorch interop: state_dicts of torch.nn.RNN, GRU and LSTM to and from
the shipped cells and networks of them; round trips, errors, and parity of
outputs, final states and gradients with torch itself."""
import subprocess
import sys

import numpy as np
import pytest

import seqdsl
from seqdsl.spec import library_cells

torch = pytest.importorskip("torch", reason="the torch interop tests need PyTorch: "
                            "pip install torch==2.13.0 (or seqdsl[torch])")
from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

from seqdsl.interop import torch as ti  # noqa: E402

MODULES = {"LSTM": nn.LSTM, "TorchGRU": nn.GRU, "RNN": nn.RNN}
FOLDED = {"LSTM": True, "TorchGRU": False, "RNN": True}  # bias_ih + bias_hh made one
TOL = {"float64": 1e-9, "float32": 1e-5}
NET = """network Net {{
    input x
    h = {layers}(x)
    output ŷ<t> = Wy h<t> + by
}}
"""


def network(layers, cell="LSTM", H=5):
    return seqdsl.loads(NET.format(layers=layers.format(cell=f"{cell}(H={H})"))).networks["Net"]


def module(name, X=3, H=5, dtype="float64", **kw):
    torch.manual_seed(0)
    m = MODULES[name](X, H, dtype=getattr(torch, dtype), **kw)
    with torch.no_grad():  # biases big enough that folding them is visible
        for k, p in m.named_parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return m


def same_bits(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


# ---- torch stays optional ----------------------------------------------------------

def test_importing_seqdsl_does_not_import_torch():
    code = ("import sys, seqdsl, seqdsl.spec, seqdsl.cli, seqdsl.interop.torch\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_missing_torch_says_how_to_install(monkeypatch, run_cli, tmp_path):
    ct = library_cells()["LSTM"]
    sd = {k: v.numpy() for k, v in module("LSTM").state_dict().items()}
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    params = ti.import_cell(ct, sd)  # from NumPy arrays: no torch needed
    with pytest.raises(seqdsl.SeqError) as e:
        ti.export_cell(ct, params)
    assert "needs PyTorch, which is not installed" in e.value.message
    assert "pip install torch==2.13.0" in e.value.hint and "seqdsl[torch]" in e.value.hint
    np.savez(tmp_path / "p.npz", **params)
    code, out, err = run_cli("export", "seqdsl/lang/library/lstm.seq", tmp_path / "p.npz",
                             "-o", tmp_path / "p.pt")
    assert code == 1 and err.startswith("error: export_cell needs PyTorch")


# ---- round trips ----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", MODULES)
def test_cell_round_trips(name, dtype):
    ct = library_cells()[name]
    m = module(name, dtype=dtype)
    sd = m.state_dict()
    p = ti.import_cell(ct, m)
    assert list(p) == list(ct.params) and all(a.dtype == dtype for a in p.values())
    back = ti.export_cell(ct, p)
    assert list(back) == list(sd)  # torch's order: load_state_dict takes it as it is
    for k, t in sd.items():
        got = back[k].numpy()
        if FOLDED[name] and k.startswith("bias_ih"):  # the sum, in the dtype
            assert same_bits(got, t.numpy() + sd[k.replace("_ih", "_hh")].numpy())
        elif FOLDED[name] and k.startswith("bias_hh"):
            assert not got.any() and got.dtype == dtype
        else:
            assert same_bits(got, t.numpy()), k
    # seqdsl → torch → seqdsl is exact, -0.0 and all
    cell = seqdsl.instantiate(ct, hidden=5, input=3, dtype=dtype)
    p = cell.init_params(3)
    for a in p.values():
        a.flat[0] = -0.0
        a += np.random.default_rng(0).standard_normal(a.shape).astype(dtype) * (a != 0)
    again = ti.import_cell(ct, ti.export_cell(ct, p))
    assert list(again) == list(p) and all(same_bits(again[k], p[k]) for k in p)


@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize("layers,num_layers,bidirectional", [
    ("{cell}", 1, False), ("stack({cell}, depth=3)", 3, False),
    ("bidirectional({cell})", 1, True),
    ("stack(bidirectional({cell}), bidirectional({cell}))", 2, True)])
def test_network_round_trips(name, layers, num_layers, bidirectional):
    nt = network(layers, name)
    m = module(name, X=4, num_layers=num_layers, bidirectional=bidirectional)
    p = ti.import_network(nt, "h", m)
    assert list(p) == [n for n in nt.params if n.startswith("h.")]
    sd = ti.export_network(nt, "h", {**p, "Wy": np.zeros((2, 10))})  # a head's: ignored
    assert ti.layout_of(sd) == ti.Layout(MODULES[name].__name__, 4, 5, num_layers, bidirectional)
    m2 = ti.module_for(sd)
    m2.load_state_dict(sd)
    again = ti.import_network(nt, "h", m2)
    assert list(again) == list(p) and all(same_bits(again[k], p[k]) for k in p)


@pytest.mark.parametrize("name", MODULES)
def test_every_entry_is_used_exactly_once(name):
    """Distinct values in every entry (zeros in bias_hh where biases fold):
    the imported parameters hold each of them once."""
    nt = network("stack(bidirectional({cell}), depth=2)", name)
    m = module(name, num_layers=2, bidirectional=True)
    sd = {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}
    start = 1.0
    for k, a in sd.items():
        if FOLDED[name] and k.startswith("bias_hh"):
            a[...] = 0
        else:
            a[...] = np.arange(start, start + a.size).reshape(a.shape)
            start += a.size
    got = np.sort(np.concatenate([a.ravel() for a in ti.import_network(nt, "h", sd).values()]))
    assert np.array_equal(got, np.arange(1.0, start))


def test_prefix_picks_a_submodule():
    model = nn.ModuleDict({"embed": nn.Linear(2, 3), "rnn": module("TorchGRU")})
    ct = library_cells()["TorchGRU"]
    p = ti.import_cell(ct, model.state_dict(), prefix="rnn.")
    assert same_bits(p["Un"], model.rnn.weight_hh_l0[10:].detach().numpy())
    sd = ti.export_cell(ct, p, prefix="rnn.")
    assert set(sd) == {k for k in model.state_dict() if k.startswith("rnn.")}
    with pytest.raises(seqdsl.SeqError, match="state_dict entries not used: embed.weight"):
        ti.import_cell(ct, model.state_dict())
    with pytest.raises(seqdsl.SeqError, match="no state_dict entry starts with prefix `enc.`"):
        ti.import_cell(ct, model.state_dict(), prefix="enc.")


# ---- errors ---------------------------------------------------------------------------

def error(fn, *args, **kw) -> str:
    with pytest.raises(seqdsl.SeqError) as e:
        fn(*args, **kw)
    return e.value.message


def test_state_dict_errors():
    lstm = library_cells()["LSTM"]
    sd = dict(module("LSTM").state_dict())
    assert error(ti.import_cell, lstm, {**sd, "extra": sd["bias_ih_l0"]}) == \
        "state_dict entries not used: extra"
    del sd["bias_hh_l0"]
    assert error(ti.import_cell, lstm, sd) == "state_dict entries missing: bias_hh_l0"
    assert "missing: bias_ih_l0, bias_hh_l0" in error(ti.import_cell, lstm,
                                                       nn.LSTM(3, 5, bias=False))
    assert "proj_size=2" in error(ti.import_cell, lstm, nn.LSTM(3, 5, proj_size=2))
    assert "nonlinearity='relu'" in error(ti.import_cell, library_cells()["RNN"],
                                          nn.RNN(3, 5, nonlinearity="relu"))
    assert error(ti.import_cell, lstm, nn.LSTM(3, 5).to(torch.bfloat16)).startswith(
        "state_dict entry `weight_ih_l0` is bfloat16")
    mixed = dict(nn.LSTM(3, 5).state_dict(), bias_hh_l0=torch.zeros(20, dtype=torch.float64))
    assert "of different dtypes" in error(ti.import_cell, lstm, mixed)
    assert error(ti.import_cell, lstm, dict(nn.LSTM(3, 5).state_dict(), bias_ih_l0=torch.zeros(
        19))) == "state_dict entry bias_ih_l0 has shape 19; LSTM(hidden_size=5) needs 20"
    assert error(ti.import_cell, lstm, dict(nn.LSTM(3, 5).state_dict(), weight_hh_l0=torch.zeros(
        20, 4))).startswith("weight_hh_l0 has 5×4 rows for hidden size 4")
    assert error(ti.import_cell, lstm, nn.GRU(3, 5)).startswith(
        "cell LSTM does not match the torch module: torch.nn.LSTM against GRU")
    assert "has 2 layer(s), bidirectional" in error(ti.import_cell, lstm,
                                                    nn.LSTM(3, 5, 2, bidirectional=True))
    assert error(ti.import_cell, library_cells()["GRU"], nn.GRU(3, 5)) == \
        "cell GRU has no torch counterpart"
    assert "expected a state_dict" in error(ti.import_cell, lstm, [1, 2])


def test_structure_mismatch_errors():
    nt = network("stack(bidirectional({cell}), depth=2)")
    what = "sequence `h` of network Net does not match the torch module: "
    m = error(ti.import_network, nt, "h", nn.LSTM(3, 5, num_layers=3, bidirectional=True))
    assert m == what + "num_layers 2 against 3 (seqdsl's against the module's)"
    m = error(ti.import_network, nt, "h", nn.LSTM(3, 5, num_layers=2))
    assert m == what + "bidirectional True against False (seqdsl's against the module's)"
    m = error(ti.import_network, nt, "h", nn.GRU(3, 7, num_layers=2, bidirectional=True))
    assert m == what + "torch.nn.LSTM against GRU; hidden_size 5 against 7 (seqdsl's against " \
                       "the module's)"
    fixed = seqdsl.loads("network N {\n input x\n g = LSTM(H=8)(x)\n h = LSTM(H=5)(g)\n"
                         " output y<t> = W h<t>\n}").networks["N"]
    assert "input_size 8 against 3" in error(ti.import_network, fixed, "h", nn.LSTM(3, 5))
    assert "network Net has no sequence `q`" == error(ti.import_network, nt, "q", nn.LSTM(3, 5))
    for layers, message in [
            ("stack(bidirectional({cell}), {cell})", "bidirectional at some layers only"),
            ("bidirectional(stack({cell}, {cell}))", "bidirectional layer of more than one cell"),
            ("stack({cell}, GRU(H=5))", "has no torch counterpart"),
            ("stack({cell}, TorchGRU(H=5))", "mixes cells LSTM, TorchGRU"),
            ("stack({cell}, LSTM(H=6))", "has layers of hidden sizes 5, 6")]:
        assert message in error(ti.import_network, network(layers), "h", nn.LSTM(3, 5))


def test_export_errors():
    lstm = library_cells()["LSTM"]
    p = ti.import_cell(lstm, module("LSTM"))
    assert error(ti.export_cell, lstm, {k: v for k, v in p.items() if k != "bo"}) == \
        "parameters of cell LSTM missing: bo"
    assert error(ti.export_cell, lstm, {**p, "Wq": p["Wu"]}) == "parameters not of cell LSTM: Wq"
    assert "parameter `Wf` has shape 5×9" in error(ti.export_cell, lstm,
                                                   {**p, "Wf": np.zeros((5, 9))})
    assert "parameters of different dtypes" in error(ti.export_cell, lstm,
                                                     {**p, "bo": p["bo"].astype(np.float32)})
    assert "`bo` is int64" in error(ti.export_cell, lstm, {**p, "bo": np.zeros(5, int)})
    nt = network("bidirectional({cell})")
    q = {f"h.{d}.{k}": v for d in ("fwd", "bwd") for k, v in p.items()}
    assert ti.export_network(nt, "h", q)  # fine as it is
    assert error(ti.export_network, nt, "h", {**q, "h.fwd.Wq": p["Wu"]}) == \
        "parameters not of sequence `h`: h.fwd.Wq"
    other = ti.import_cell(lstm, module("LSTM", X=4))
    assert error(ti.export_network, nt, "h", {**q, **{f"h.bwd.{k}": v for k, v in other.items()}}) \
        == "parameters `h.bwd.*` read inputs of size 4, but `h.fwd.*` of size 3"
    wide = ti.import_cell(lstm, module("LSTM", H=6))
    assert error(ti.export_network, nt, "h", {**q, **{f"h.bwd.{k}": v for k, v in wide.items()}}) \
        == "parameters `h.bwd.*` have H=6, but layer `LSTM(H=5)` at `h.bwd` has H=5"


# ---- parity with torch ----------------------------------------------------------------

def torch_run(m, x, lengths):
    """Outputs (T, B, ·) zero past each length, final states, and x as a
    leaf tensor, through packed sequences of unsorted lengths."""
    xt = torch.tensor(x, requires_grad=True)
    packed = pack_padded_sequence(xt, torch.tensor(lengths), enforce_sorted=False)
    out, h = m(packed)
    out, _ = pad_packed_sequence(out, total_length=x.shape[0])
    return xt, out, (h if isinstance(h, tuple) else (h,))


def torch_grads(m, fold: bool) -> dict:
    """The module's gradients as a state_dict; where seqdsl folds the biases
    its bias's gradient is bias_ih's (bias_hh's is the same)."""
    g = {k: p.grad.detach().numpy().copy() for k, p in m.named_parameters()}
    if fold:
        for k in [k for k in g if k.startswith("bias_hh")]:
            assert rel(g[k], g[k.replace("_hh", "_ih")]) < 1e-5  # summed in another order
            g[k][...] = 0
    return g


PARITY = [(n, d, "numpy") for n in MODULES for d in ("float64", "float32")] + [
    (n, "float32", "numba") for n in MODULES] + [("LSTM", "float64", "numba")]


@pytest.mark.parametrize("name,dtype,backend", PARITY)
def test_single_layer_parity(name, dtype, backend):
    H, X, T, B = 5, 3, 7, 4
    lengths = np.array([4, 7, 1, 5])
    rng = np.random.default_rng(1)
    m = module(name, X, H, dtype)
    x = rng.standard_normal((T, B, X)).astype(dtype)
    xt, out, finals = torch_run(m, x, lengths)
    valid = (np.arange(T)[:, None] < lengths)[..., None]
    d_out = (rng.standard_normal((T, B, H)) * valid).astype(dtype)
    d_fin = [rng.standard_normal((B, H)).astype(dtype) for _ in finals]
    loss = (out * torch.tensor(d_out)).sum() + sum(
        (f[0] * torch.tensor(d)).sum() for f, d in zip(finals, d_fin))
    loss.backward()

    ct = library_cells()[name]
    cell = seqdsl.instantiate(ct, hidden=H, input=X, dtype=dtype, backend=backend)
    params = ti.import_cell(ct, m)
    r = cell.forward(params, x, lengths)
    states = [n for n, _ in ct.states]  # LSTM: a, c as torch's h, c
    g = cell.backward(params, r, d_out, dict(zip(states, d_fin)))
    want = ti.import_cell(ct, torch_grads(m, FOLDED[name]))
    errors = {"outputs": rel(r.outputs, out.detach().numpy()),
              **{f"final {s}": rel(r.final[s], f[0].detach().numpy())
                 for s, f in zip(states, finals)},
              "d x": rel(g.inputs["x"], xt.grad.numpy()),
              **{f"d {k}": rel(g.params[k], want[k]) for k in want}}
    print(name, dtype, backend, f"worst {max(errors.values()):.1e}")
    assert max(errors.values()) <= TOL[dtype], errors


def net_parity(name, dtype, backend, reduction):
    """Errors of a 2-layer bidirectional sequence with a linear head and MSE
    against torch: outputs, heads, final states, every gradient."""
    H, X, Y, T, B = 4, 3, 2, 6, 5
    lengths = np.array([3, 6, 1, 4, 6])
    rng = np.random.default_rng(2)
    nt = network("stack(bidirectional({cell}), depth=2)", name, H)
    m = module(name, X, H, dtype, num_layers=2, bidirectional=True)
    torch.manual_seed(1)
    lin = nn.Linear(2 * H, Y, dtype=getattr(torch, dtype))
    x = rng.standard_normal((T, B, X)).astype(dtype)
    target = rng.standard_normal((T, B, Y)).astype(dtype)
    xt, out, finals = torch_run(m, x, lengths)
    y = lin(out)
    valid = torch.tensor((np.arange(T)[:, None] < lengths)[..., None])
    loss = (((y - torch.tensor(target)) * valid) ** 2).sum()
    if reduction == "mean":
        loss = loss / (int(lengths.sum()) * Y)
    loss.backward()

    params = ti.import_network(nt, "h", m)
    params.update(Wy=lin.weight.detach().numpy().copy(), by=lin.bias.detach().numpy().copy())
    net = seqdsl.instantiate(nt, input=X, sizes={"Y": Y}, dtype=dtype, backend=backend)
    res = net.forward(params, x, lengths)
    value, grads = net.loss_and_grad(params, x, lengths, target, loss="mse", reduction=reduction)
    want = ti.import_network(nt, "h", torch_grads(m, FOLDED[name]))
    want.update(Wy=lin.weight.grad.numpy(), by=lin.bias.grad.numpy())
    states = [n for n, _ in library_cells()[name].states]
    errors = {"h": rel(res.sequences["h"], out.detach().numpy()),
              "ŷ": rel(res.heads["ŷ"], (y * valid).detach().numpy()),
              "loss": rel(value, loss.item()),
              **{f"d {k}": rel(grads[k], want[k]) for k in want}}
    for i, prefix in enumerate(["h.0.fwd", "h.0.bwd", "h.1.fwd", "h.1.bwd"]):
        for s, f in zip(states, finals):
            errors[f"{prefix} {s}"] = rel(res.final[prefix][s], f[i].detach().numpy())
    return errors


@pytest.mark.parametrize("dtype,reduction", [("float64", "mean"), ("float64", "sum"),
                                             ("float32", "mean")])
@pytest.mark.parametrize("name", MODULES)
def test_network_parity(name, dtype, reduction):
    errors = net_parity(name, dtype, "numpy", reduction)
    print(name, dtype, reduction, f"worst {max(errors.values()):.1e}")
    assert max(errors.values()) <= TOL[dtype], errors


@pytest.mark.parametrize("name,dtype", [("LSTM", "float32")])  # each compile takes ~20 s
def test_network_parity_numba(name, dtype):
    errors = net_parity(name, dtype, "numba", "mean")
    print(name, dtype, f"worst {max(errors.values()):.1e}")
    assert max(errors.values()) <= TOL[dtype], errors


# ---- the command line ---------------------------------------------------------------

def test_cli_round_trip_of_a_network(tmp_path, run_cli):
    spec = tmp_path / "net.seq"
    spec.write_text(NET.format(layers="stack(bidirectional(TorchGRU(H=5)), depth=2)"), "utf-8")
    m = module("TorchGRU", X=3, num_layers=2, bidirectional=True, dtype="float32")
    torch.save(m.state_dict(), tmp_path / "in.pt")
    code, out, err = run_cli("import", spec, tmp_path / "in.pt", "-o", tmp_path / "p.npz")
    assert code == 0, err
    assert out.strip() == (f"imported nn.GRU(input_size=3, hidden_size=5, num_layers=2, "
                           f"bidirectional=True) into sequence `h` of network Net: 48 "
                           f"parameters (float32) written to {tmp_path / 'p.npz'}")
    with np.load(tmp_path / "p.npz") as f:
        p = dict(f)
    assert list(p) == [n for n in network("stack(bidirectional({cell}), depth=2)",
                                          "TorchGRU").params if n.startswith("h.")]
    code, out, err = run_cli("export", spec, "--network", "Net", "--sequence", "h",
                             tmp_path / "p.npz", "-o", tmp_path / "out.pt")
    assert code == 0, err
    assert out.startswith("exported sequence `h` of network Net to ")
    back = torch.load(tmp_path / "out.pt", weights_only=True)
    assert list(back) == list(m.state_dict())
    assert all(same_bits(back[k].numpy(), v.numpy()) for k, v in m.state_dict().items())


def test_cli_cell_and_prefix(tmp_path, run_cli):
    rnn = module("RNN")
    torch.save({"enc.rnn." + k: v for k, v in rnn.state_dict().items()}, tmp_path / "m.pt")
    code, out, err = run_cli("import", "seqdsl/lang/library/rnn.seq", "--prefix", "enc.rnn.",
                             tmp_path / "m.pt", "-o", tmp_path / "p.npz")
    assert code == 0 and "into cell RNN: 3 parameters (float64)" in out, err
    code, out, err = run_cli("export", "seqdsl/lang/library/tagger.seq", "--cell", "RNN",
                             "--prefix", "rnn.", tmp_path / "p.npz", "-o", tmp_path / "o.pt")
    assert code == 0, err
    assert sorted(torch.load(tmp_path / "o.pt", weights_only=True)) == sorted(
        "rnn." + k for k in rnn.state_dict())


def test_cli_errors(tmp_path, run_cli):
    torch.save(nn.LSTM(3, 4), tmp_path / "module.pt")  # a whole module: not weights only
    np.savez(tmp_path / "p.npz", Wu=np.zeros((2, 2)))
    torch.save({}, tmp_path / "p.pt")
    lstm, translate = "seqdsl/lang/library/lstm.seq", "seqdsl/lang/library/translate.seq"
    cases = [
        (["import", lstm, tmp_path / "module.pt"], "not a state_dict that "
         "torch.load(weights_only=True) reads (Weights only load failed)"),
        (["import", lstm, tmp_path / "none.pt"], "none.pt: no such file"),
        (["import", lstm, tmp_path / "p.npz"], "not a state_dict that torch.load"),
        (["export", lstm, tmp_path / "p.pt"], "not an .npz file of arrays"),
        (["export", lstm, tmp_path / "p.npz"], "parameters of cell LSTM missing: bu, Wf"),
        (["export", translate, tmp_path / "p.npz"], "network Translate has 2 sequences (e, d)"),
        (["export", lstm, "--sequence", "h", tmp_path / "p.npz"], "--sequence goes with "
         "--network"),
    ]
    for args, message in cases:
        code, out, err = run_cli(*args, "-o", tmp_path / "out")
        assert code == 1 and message in err.splitlines()[0] and "Traceback" not in err, err
    code, _, err = run_cli("export", lstm, "--cell", "LSTM", "--network", "N", "p.npz", "-o", "x")
    assert code == 2 and "not allowed with argument" in err


@pytest.mark.parametrize("cmd", ["export", "import"])
def test_cli_help(cmd):
    p = subprocess.run([sys.executable, "-m", "seqdsl", cmd, "--help"], capture_output=True,
                       text=True)
    assert p.returncode == 0 and f"usage: seqdsl {cmd}" in p.stdout and "-o OUT." in p.stdout
