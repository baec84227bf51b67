"""Optimisers (against torch.optim where torch is installed), resuming from
saved state, and gradient clipping."""
import json
import math

import numpy as np
import pytest

from seqdsl.errors import SeqError
from seqdsl.train.optim import (OPTIMIZERS, Adam, Momentum, SGD, clip_by_global_norm,
                                clip_by_value, global_norm, make_optimizer)

SHAPES = {"a.Wu": (3, 4), "a.Γw": (5,), "h.0.fwd.bf": (4,), "Wy": (2, 3)}


def params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(s).astype(dtype) for n, s in SHAPES.items()}


def grad_steps(n, seed=1, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [{k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}
            for _ in range(n)]


def test_make_optimizer_names():
    assert isinstance(make_optimizer("sgd", 0.1), SGD)
    assert isinstance(make_optimizer("momentum", 0.1), Momentum)
    assert isinstance(make_optimizer("adam", 0.1), Adam)
    assert {make_optimizer(n, 1.0).name for n in OPTIMIZERS} == set(OPTIMIZERS)


def test_make_optimizer_unknown_name_lists_them():
    with pytest.raises(SeqError) as e:
        make_optimizer("adamw", 0.1)
    assert all(n in e.value.message for n in OPTIMIZERS)
    assert "adam" in e.value.hint


@pytest.mark.parametrize("lr", [0, -0.1, math.nan, math.inf, "0.1", True, None])
def test_make_optimizer_bad_lr(lr):
    with pytest.raises(SeqError, match="learning rate"):
        make_optimizer("sgd", lr)


# ---- against torch ----------------------------------------------------------------------


def torch_run(name, lr, steps):
    torch = pytest.importorskip("torch")
    start = params()
    tensors = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in start.items()}
    opt = {"sgd": lambda ps: torch.optim.SGD(ps, lr=lr),
           "momentum": lambda ps: torch.optim.SGD(ps, lr=lr, momentum=0.9, dampening=0),
           "adam": lambda ps: torch.optim.Adam(ps, lr=lr)}[name](list(tensors.values()))
    for grads in steps:
        for k, t in tensors.items():
            t.grad = torch.tensor(grads[k])
        opt.step()
    return {k: t.detach().numpy() for k, t in tensors.items()}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_matches_torch(name):
    steps = grad_steps(20)
    expected = torch_run(name, 0.01, steps)
    p = params()
    opt = make_optimizer(name, 0.01)
    for grads in steps:
        opt.step(p, {k: g.copy() for k, g in grads.items()})
    for k in SHAPES:
        np.testing.assert_allclose(p[k], expected[k], rtol=1e-12, atol=0)
        assert not np.array_equal(p[k], params()[k])


def test_sgd_and_momentum_by_hand():
    p = {"w": np.array([1.0, 2.0])}
    opt = Momentum(0.5, beta=0.9)
    opt.step(p, {"w": np.array([1.0, 0.0])})
    opt.step(p, {"w": np.array([1.0, 0.0])})
    # v = 1, then 1.9: w moves by 0.5 and then 0.95
    np.testing.assert_allclose(p["w"], [1 - 0.5 - 0.95, 2.0])
    q = {"w": np.array([1.0])}
    SGD(0.25).step(q, {"w": np.array([2.0])})
    assert q["w"][0] == 0.5


# ---- state and resuming -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_resume_is_bit_identical(name, dtype):
    steps = grad_steps(14, dtype=dtype)
    straight, p = make_optimizer(name, 0.003), params(dtype=dtype)
    for grads in steps:
        straight.step(p, grads)

    first, q = make_optimizer(name, 0.003), params(dtype=dtype)
    for grads in steps[:6]:
        first.step(q, grads)
    arrays, meta = first.state()
    meta = json.loads(json.dumps(meta))  # as a checkpoint would store it
    arrays = {k: np.frombuffer(a.tobytes(), a.dtype).reshape(a.shape) for k, a in arrays.items()}
    assert all(a.dtype == dtype for a in arrays.values())
    q = {k: v.copy() for k, v in q.items()}
    resumed = make_optimizer(name, 0.003)
    resumed.load_state(arrays, meta)
    for grads in steps[6:]:
        resumed.step(q, grads)
    for k in SHAPES:
        assert q[k].dtype == dtype
        assert q[k].tobytes() == p[k].tobytes(), k


def test_state_contents():
    opt = make_optimizer("adam", 0.01)
    p = params(dtype=np.float32)
    opt.step(p, grad_steps(1, dtype=np.float32)[0])
    arrays, meta = opt.state()
    assert set(arrays) == {f"{s}/{n}" for s in ("m", "v") for n in SHAPES}
    assert all(a.dtype == np.float32 for a in arrays.values())
    assert meta["name"] == "adam" and meta["t"] == 1
    assert (meta["lr"], meta["beta1"], meta["beta2"], meta["eps"]) == (0.01, 0.9, 0.999, 1e-8)
    json.dumps(meta)
    arrays["m/a.Wu"][...] = 7  # the state handed out is a copy
    assert not np.any(opt.slots["m"]["a.Wu"] == 7)


def test_load_state_of_another_optimizer():
    opt = make_optimizer("adam", 0.01)
    opt.step(params(), grad_steps(1)[0])
    arrays, meta = opt.state()
    with pytest.raises(SeqError, match="adam") as e:
        make_optimizer("momentum", 0.01).load_state(arrays, meta)
    assert "--optimizer adam" in e.value.hint


def test_load_state_missing_parameter():
    opt = make_optimizer("momentum", 0.01)
    opt.step(params(), grad_steps(1)[0])
    arrays, meta = opt.state()
    del arrays["v/a.Γw"]
    with pytest.raises(SeqError, match="v/a.Γw"):
        make_optimizer("momentum", 0.01).load_state(arrays, meta)
    del meta["t"]
    with pytest.raises(SeqError, match="lacks t"):
        make_optimizer("momentum", 0.01).load_state(opt.state()[0], meta)


def test_step_on_other_parameters_after_load():
    opt = make_optimizer("adam", 0.01)
    opt.step(params(), grad_steps(1)[0])
    fresh = make_optimizer("adam", 0.01)
    fresh.load_state(*opt.state())
    p = params()
    p["extra"] = np.zeros(2)
    g = grad_steps(1)[0]
    g["extra"] = np.ones(2)
    with pytest.raises(SeqError, match="extra"):
        fresh.step(p, g)


def test_step_checks_gradients():
    opt = make_optimizer("sgd", 0.1)
    g = grad_steps(1)[0]
    del g["Wy"]
    with pytest.raises(SeqError, match="no gradient for parameter Wy"):
        opt.step(params(), g)
    g = grad_steps(1)[0]
    g["a.Wu"] = np.zeros((4, 3))
    with pytest.raises(SeqError, match="shape"):
        opt.step(params(), g)


# ---- clipping ---------------------------------------------------------------------------


def test_global_norm():
    g = grad_steps(1)[0]
    flat = np.concatenate([a.ravel() for a in g.values()])
    assert global_norm(g) == pytest.approx(np.linalg.norm(flat), rel=1e-14)
    assert global_norm({}) == 0.0
    big = {"w": np.full(4, 1e30, np.float32)}
    assert global_norm(big) == pytest.approx(2e30, rel=1e-6)  # no float32 overflow


def test_clip_by_global_norm_clips():
    g = grad_steps(1)[0]
    before = global_norm(g)
    arrays = dict(g)
    returned = clip_by_global_norm(g, 0.5)
    assert returned == before
    assert global_norm(g) == pytest.approx(0.5, rel=1e-12)
    assert all(g[k] is arrays[k] for k in g)  # in place
    direction = grad_steps(1)[0]
    for k in g:
        np.testing.assert_allclose(g[k], direction[k] * (0.5 / before), rtol=1e-13)
    known = grad_steps(1)[0]  # the norm given, as the training loop has it: the same result
    assert clip_by_global_norm(known, 0.5, norm=before) == before
    assert all(np.array_equal(known[k], g[k]) for k in g)


def test_clip_by_global_norm_leaves_small_gradients():
    g = grad_steps(1)[0]
    before = {k: v.copy() for k, v in g.items()}
    norm = global_norm(g)
    assert clip_by_global_norm(g, norm * 2) == norm
    assert all(np.array_equal(g[k], before[k]) for k in g)


def test_clip_by_global_norm_float32_keeps_dtype():
    g = grad_steps(1, dtype=np.float32)[0]
    clip_by_global_norm(g, 0.1)
    assert all(a.dtype == np.float32 for a in g.values())
    assert global_norm(g) == pytest.approx(0.1, rel=1e-5)


def test_clip_by_value():
    g = {"w": np.array([-3.0, -0.5, 0.0, 0.5, 3.0]), "a.Γw": np.array([[10.0]])}
    w = g["w"]
    clip_by_value(g, 1.0)
    assert g["w"] is w
    assert g["w"].tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert g["a.Γw"].tolist() == [[1.0]]


def test_clip_read_only_gradient_is_replaced():
    a = np.array([5.0, -5.0])
    a.setflags(write=False)
    g = {"w": a}
    clip_by_value(g, 2.0)
    assert g["w"].tolist() == [2.0, -2.0] and a.tolist() == [5.0, -5.0]


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf])
def test_clip_bad_limits(bad):
    with pytest.raises(SeqError):
        clip_by_global_norm(grad_steps(1)[0], bad)
    with pytest.raises(SeqError):
        clip_by_value(grad_steps(1)[0], bad)


# ---- the compiled loops against the NumPy formulas ----------------------------------------


def numpy_update(name, p, g, slots, opt):
    """The update rules as NumPy formulas, an operation at a time."""
    if name == "sgd":
        p -= opt.lr * g
    elif name == "momentum":
        (v,) = slots
        v *= opt.beta
        v += g
        p -= opt.lr * v
    else:
        m, v = slots
        m *= opt.beta1
        m += g * (1 - opt.beta1)
        v *= opt.beta2
        v += (g * g) * (1 - opt.beta2)
        denom = np.sqrt(v) / math.sqrt(1 - opt.beta2 ** opt.t) + opt.eps
        p -= (m / denom) * (opt.lr / (1 - opt.beta1 ** opt.t))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_compiled_updates_equal_the_numpy_formulas_bit_for_bit(name, dtype):
    rng = np.random.default_rng(3)
    p = rng.standard_normal((40, 30)).astype(dtype)
    q = p.copy()
    opt = make_optimizer(name, 0.003)
    slots = [np.zeros_like(p) for _ in opt.SLOTS]
    for _ in range(25):  # gradients from tiny to large
        g = (rng.standard_normal(p.shape) * 10.0 ** rng.uniform(-6, 3)).astype(dtype)
        opt.step({"w": p}, {"w": g})
        numpy_update(name, q, g, slots, opt)
    assert p.tobytes() == q.tobytes()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_strided_parameter_is_updated_in_place(name):
    rng = np.random.default_rng(4)
    whole = rng.standard_normal((6, 10))
    before = whole.copy()
    view, alone = whole[:, ::2], whole[:, ::2].copy()
    g = rng.standard_normal(view.shape)
    make_optimizer(name, 0.1).step({"w": view}, {"w": g})
    make_optimizer(name, 0.1).step({"w": alone}, {"w": g})
    np.testing.assert_array_equal(whole[:, ::2], alone)
    assert not np.array_equal(whole[:, ::2], before[:, ::2])
    np.testing.assert_array_equal(whole[:, 1::2], before[:, 1::2])  # the rest untouched


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_parameters_of_two_dtypes_update_together_as_each_alone(name):
    # one compiled call per dtype updates all its parameters: each gets its own
    # gradient and slots, in its own dtype, strided or not
    rng = np.random.default_rng(6)
    shapes = {"a": ((3, 4), np.float32), "b": ((5,), np.float64), "c": ((2, 3), np.float32),
              "d": ((4, 2), np.float64), "e": ((7,), np.float32)}
    params = {k: rng.standard_normal(s).astype(t) for k, (s, t) in shapes.items()}
    params["c"] = np.asfortranarray(params["c"])  # not C-contiguous
    alone = {k: v.copy() for k, v in params.items()}
    together, each = make_optimizer(name, 0.01), {k: make_optimizer(name, 0.01) for k in params}
    for _ in range(3):
        grads = {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in params.items()}
        together.step(params, grads)
        for k in params:
            each[k].step({k: alone[k]}, {k: grads[k]})
    for k, v in params.items():
        assert v.dtype == shapes[k][1] and v.tobytes() == np.ascontiguousarray(alone[k]).tobytes()
    for slot in together.SLOTS:
        for k in params:
            assert together.slots[slot][k].tobytes() == each[k].slots[slot][k].tobytes()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_steps_follow_the_arrays_they_are_given(name):
    """A training loop passes the same arrays every step, and the optimiser
    keeps what it built for them; new arrays, a parameter made read-only,
    or a loaded state are each seen at the next step."""
    steps = grad_steps(6)
    kept, p = make_optimizer(name, 0.01), params()
    fresh, q = make_optimizer(name, 0.01), params()
    for g in steps[:2]:
        kept.step(p, g)
        fresh.step(q, g)
    # the same values in new arrays: the update goes to them, not the old ones
    old = p
    p = {k: v.copy() for k, v in p.items()}
    before = {k: v.copy() for k, v in old.items()}
    kept.step(p, steps[2])
    fresh.step(q, steps[2])
    assert all(old[k].tobytes() == before[k].tobytes() for k in SHAPES)
    assert all(p[k].tobytes() == q[k].tobytes() for k in SHAPES)
    # a state loaded in between replaces the slots the steps read
    other = make_optimizer(name, 0.01)
    other.load_state(*fresh.state())
    kept.load_state(*fresh.state())
    for g in steps[3:5]:
        kept.step(p, g)
        fresh.step(q, g)
    assert all(p[k].tobytes() == q[k].tobytes() for k in SHAPES)
    for slot in kept.SLOTS:
        assert all(kept.slots[slot][k].tobytes() == fresh.slots[slot][k].tobytes()
                   for k in SHAPES)
    p["Wy"].flags.writeable = False
    with pytest.raises(SeqError, match="parameter Wy: expected a writeable"):
        kept.step(p, steps[5])


def test_a_float64_gradient_of_a_float32_parameter_is_rounded_first():
    p32 = np.ones(4, np.float32)
    g = np.array([0.1, 1e-9, 3.0, -2.5])
    make_optimizer("sgd", 0.5).step({"w": p32}, {"w": g})
    assert p32.dtype == np.float32
    np.testing.assert_array_equal(p32, np.float32(1) - np.float32(0.5) * g.astype(np.float32))


@pytest.mark.parametrize("bad, what", [(np.arange(3), "int64"), ([1.0, 2.0], "list")])
def test_a_parameter_that_cannot_be_updated_is_refused(bad, what):
    with pytest.raises(SeqError, match=f"parameter w: expected a writeable floating-point "
                                       f"array, given {what}"):
        make_optimizer("sgd", 0.1).step({"w": bad}, {"w": np.ones(3)})


def test_global_norm_of_sizes_off_its_blocks_of_eight_and_mixed_dtypes():
    # the sum runs eight at a time; the sizes' tails and every dtype count once
    rng = np.random.default_rng(9)
    grads = {f"g{n}": rng.standard_normal(n).astype(t)
             for n, t in ((1, np.float32), (7, np.float64), (9, np.float32), (16, np.float64),
                          (17, np.float32), (1000, np.float32))}
    grads["ints"] = np.arange(-5, 6)
    flat = np.concatenate([g.astype(np.float64) for g in grads.values()])
    assert global_norm(grads) == pytest.approx(np.linalg.norm(flat), rel=1e-14)


def test_global_norm_sums_in_float64():
    big = {"a": np.full(3, 1e19, np.float32), "b": np.array([[3.0, 4.0]])}
    assert math.isclose(global_norm(big), math.sqrt(3 * 1e38 + 25), rel_tol=1e-6)
    assert global_norm({"a": np.arange(4), "b": [[1.0]]}) == math.sqrt(14 + 1)
