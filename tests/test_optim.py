"""Tests for fnnet.optim: each rule against its published equations, redone in numpy."""

import math
from typing import NamedTuple

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fnnet import optim  # noqa: E402

STEPS = 5


class Pair(NamedTuple):
    W: object
    b: object


# Few distinct leaf shapes throughout: every new (op, shape, dtype) costs an eager compile.


def make_params(seed=0, dtype=np.float64):
    """A pytree with a tuple, a NamedTuple, a dict, a list and a scalar leaf."""
    r = np.random.default_rng(seed)
    p = (Pair(r.normal(size=(2, 3)), r.normal(size=3)), {"w": r.normal(size=3), "s": [1.5]})
    return jax.tree_util.tree_map(lambda x: np.asarray(x, dtype), p + (r.normal(size=(2, 3)),))


def small_params(seed=0, dtype=np.float64):
    """A smaller pytree (dict, NamedTuple), for the tests that compile whole updates."""
    r = np.random.default_rng(seed)
    p = {"a": r.normal(size=3), "nt": Pair(r.normal(size=(2, 3)), r.normal(size=3))}
    return jax.tree_util.tree_map(lambda x: np.asarray(x, dtype), p)


def make_grads(params, steps=STEPS, seed=1):
    r = np.random.default_rng(seed)
    return [
        jax.tree_util.tree_map(lambda p: r.normal(size=np.shape(p)).astype(p.dtype), params)
        for _ in range(steps)
    ]


# ---------------------------------------------------------------------------------------------
# The independent reference: the published equations, per leaf, in plain numpy float64.


def ref_schedule(kind, t):
    if kind is None or kind == "constant":
        return 1.0
    if kind[0] == "step":
        _, every, factor = kind
        return factor ** (t // every)
    if kind[0] == "cosine":
        _, total, final, warmup = kind
        if t < warmup:
            return t / warmup
        u = min(max((t - warmup) / (total - warmup), 0.0), 1.0)
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * u))
    if kind[0] == "exp":
        _, rate = kind
        return rate**t
    raise AssertionError(kind)


def to_schedule(kind):
    if kind is None:
        return None
    if kind == "constant":
        return optim.constant()
    if kind[0] == "step":
        return optim.step_decay(kind[1], kind[2])
    if kind[0] == "cosine":
        return optim.cosine_decay(kind[1], final=kind[2], warmup=kind[3])
    if kind[0] == "exp":
        return optim.exponential_decay(kind[1])
    raise AssertionError(kind)


def ref_run(rule, params, grads_seq, lr, wd, sched, hp):
    """Run the rule for len(grads_seq) steps over the flattened leaves; return the leaves."""
    ps = [np.array(x, np.float64) for x in jax.tree_util.tree_leaves(params)]
    b1 = [np.zeros_like(x) for x in ps]  # v (momentum), m (adam), s (rmsprop)
    b2 = [np.zeros_like(x) for x in ps]  # v (adam)
    for t, grads in enumerate(grads_seq):
        eta = lr * ref_schedule(sched, t)
        gs = [np.array(x, np.float64) for x in jax.tree_util.tree_leaves(grads)]
        for i, (p, g) in enumerate(zip(ps, gs, strict=True)):
            g = g + wd * p
            if rule == "sgd":
                ps[i] = p - eta * g
            elif rule == "momentum":
                b1[i] = hp["beta"] * b1[i] + g
                d = g + hp["beta"] * b1[i] if hp["nesterov"] else b1[i]
                ps[i] = p - eta * d
            elif rule == "adam":
                k = t + 1
                b1[i] = hp["b1"] * b1[i] + (1 - hp["b1"]) * g
                b2[i] = hp["b2"] * b2[i] + (1 - hp["b2"]) * g**2
                m_hat = b1[i] / (1 - hp["b1"] ** k)
                v_hat = b2[i] / (1 - hp["b2"] ** k)
                ps[i] = p - eta * m_hat / (np.sqrt(v_hat) + hp["eps"])
            elif rule == "rmsprop":
                b1[i] = hp["decay"] * b1[i] + (1 - hp["decay"]) * g**2
                ps[i] = p - eta * g / (np.sqrt(b1[i]) + hp["eps"])
            else:
                raise AssertionError(rule)
    return ps


def run(opt, params, grads_seq, lr=None, update=None):
    update = opt.update if update is None else update
    state = opt.init(params, lr)
    for g in grads_seq:
        params, state = update(g, state, params)
    return params, state


RULES = [
    ("sgd", {}),
    ("momentum", {"beta": 0.8, "nesterov": False}),
    ("momentum", {"beta": 0.8, "nesterov": True}),
    # eps large enough to matter in the comparison, so its placement is tested
    ("adam", {"b1": 0.7, "b2": 0.9, "eps": 1e-2}),
    ("rmsprop", {"decay": 0.8, "eps": 1e-2}),
]
SCHEDULES = [None, "constant", ("step", 2, 0.5), ("cosine", 4, 0.1, 2), ("exp", 0.8)]


@pytest.mark.parametrize("sched", SCHEDULES, ids=str)
@pytest.mark.parametrize("wd", [0.0, 0.1])
@pytest.mark.parametrize("rule,hp", RULES, ids=lambda x: str(x))
def test_matches_published_equations(rule, hp, wd, sched):
    params = make_params()
    grads = make_grads(params)
    lr = 0.3
    opt = optim.get(rule, lr, weight_decay=wd, schedule=to_schedule(sched), **hp)
    got, state = run(opt, params, grads)
    want = ref_run(rule, params, grads, lr, wd, sched, hp)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(params)
    for g, w in zip(jax.tree_util.tree_leaves(got), want, strict=True):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-12, atol=1e-12)
    assert int(state["step"]) == STEPS
    assert float(state["lr"]) == lr


def test_adam_bias_correction_first_step():
    # with bias correction, the first Adam step is lr * g / (|g| + eps) whatever b1, b2
    p = {"a": np.array([1.0, -2.0, 3.0])}
    g = {"a": np.array([0.5, -4.0, 1e-3])}
    opt = optim.adam(0.1, b1=0.5, b2=0.99, eps=1e-3)
    new, _ = opt.update(g, opt.init(p), p)
    want = p["a"] - 0.1 * g["a"] / (np.abs(g["a"]) + 1e-3)
    np.testing.assert_allclose(np.asarray(new["a"]), want, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Schedules


def test_schedule_values():
    assert float(optim.constant()(7)) == 1.0
    sd = optim.step_decay(3, 0.5)
    assert [float(sd(t)) for t in range(7)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    cd = optim.cosine_decay(10)
    np.testing.assert_allclose([float(cd(t)) for t in (0, 5, 10, 20)], [1, 0.5, 0, 0], atol=1e-15)
    cw = optim.cosine_decay(12, final=0.2, warmup=2)
    np.testing.assert_allclose(
        [float(cw(t)) for t in (0, 1, 2, 7, 12, 100)], [0, 0.5, 1, 0.6, 0.2, 0.2], atol=1e-15
    )
    ed = optim.exponential_decay(0.5)
    np.testing.assert_allclose([float(ed(t)) for t in (0, 1, 3)], [1, 0.5, 0.125])
    ed2 = optim.exponential_decay(0.25, every=2)
    np.testing.assert_allclose(float(ed2(1)), 0.5)


@pytest.mark.parametrize(
    "sched",
    [
        optim.constant(),
        optim.step_decay(3, 0.5),
        optim.cosine_decay(10, 0.1, 3),
        optim.exponential_decay(0.9),
    ],
)
def test_schedules_jittable_vectorised_hashable(sched):
    ts = jnp.arange(15, dtype=jnp.int32)
    eager = np.array([float(sched(int(t))) for t in ts])
    np.testing.assert_allclose(np.asarray(jax.jit(sched)(ts)), eager, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(jax.vmap(sched)(ts)), eager, rtol=1e-12)
    assert hash(sched) == hash(type(sched)(**sched.__dict__))
    assert sched == type(sched)(**sched.__dict__)


def test_lr_of():
    opt = optim.sgd(0.5, schedule=optim.step_decay(1, 0.5))
    p = {"a": np.ones(2)}
    state = opt.init(p)
    assert float(optim.lr_of(state)) == 0.5
    assert float(optim.lr_of(state, opt)) == 0.5
    _, state = opt.update({"a": np.ones(2)}, state, p)
    assert float(optim.lr_of(state)) == 0.5
    assert float(optim.lr_of(state, opt)) == 0.25
    assert float(optim.lr_of(state, opt.schedule)) == 0.25


# ---------------------------------------------------------------------------------------------
# Transformations: vmap over models with different lrs, jit, scan; state layout and dtypes


OPTS = [
    lambda: optim.sgd(0.1, weight_decay=0.01),
    lambda: optim.momentum(0.1, nesterov=True, schedule=optim.cosine_decay(10, warmup=1)),
    lambda: optim.adam(0.05, weight_decay=0.01, schedule=optim.step_decay(2)),
    lambda: optim.rmsprop(0.01, schedule=optim.exponential_decay(0.9)),
]


@pytest.mark.parametrize("make_opt", OPTS)
def test_vmap_over_models_with_different_lrs(make_opt):
    opt = make_opt()
    models = [small_params(seed=s) for s in range(3)]
    grads = [make_grads(m, steps=3, seed=10 + s) for s, m in enumerate(models)]
    lrs = np.array([0.1, 0.01, 0.3])

    def stack(trees):
        return jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)

    stacked, state = stack(models), jax.vmap(opt.init)(stack(models), jnp.asarray(lrs))
    np.testing.assert_allclose(np.asarray(state["lr"]), lrs)
    update = jax.jit(jax.vmap(opt.update))
    for t in range(3):
        stacked, state = update(stack([g[t] for g in grads]), state, stacked)
    for i in range(3):
        alone, alone_state = run(opt, models[i], grads[i], lr=float(lrs[i]))
        mine = jax.tree_util.tree_map(lambda x, i=i: np.asarray(x)[i], (stacked, state))
        for a, b in zip(
            jax.tree_util.tree_leaves((alone, alone_state)),
            jax.tree_util.tree_leaves(mine),
            strict=True,
        ):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-12, atol=1e-14)


def test_vmap_init_without_lr_broadcasts_constructor_lr():
    opt = optim.adam(0.02)
    stacked = jax.tree_util.tree_map(lambda x: jnp.stack([x, x]), make_params())
    state = jax.vmap(opt.init)(stacked)
    np.testing.assert_allclose(np.asarray(state["lr"]), [0.02, 0.02])


@pytest.mark.parametrize("make_opt", OPTS)
def test_jit_matches_eager(make_opt):
    opt = make_opt()
    params = make_params()
    grads = make_grads(params)
    eager = run(opt, params, grads)
    jitted = run(opt, params, grads, update=jax.jit(opt.update))
    for a, b in zip(
        jax.tree_util.tree_leaves(eager), jax.tree_util.tree_leaves(jitted), strict=True
    ):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-12, atol=1e-14)
    # lr may be traced in init too
    s = jax.jit(opt.init)(params, 0.25)
    assert float(s["lr"]) == 0.25


@pytest.mark.parametrize("make_opt", OPTS)
def test_state_types_are_stable_so_scan_works(make_opt):
    opt = make_opt()
    params = small_params(dtype=np.float32)
    grads = make_grads(params, steps=3)
    state = opt.init(params)

    def sig(tree):
        return jax.tree_util.tree_map(lambda x: (x.shape, x.dtype, x.weak_type), tree)

    p2, s2 = opt.update(grads[0], state, params)
    assert sig(s2) == sig(state)
    assert sig(p2) == sig(jax.tree_util.tree_map(jnp.asarray, params))

    stacked_grads = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *grads)

    def body(carry, g):
        return opt.update(g, carry[1], carry[0]), None

    (p_scan, s_scan), _ = jax.lax.scan(body, (params, state), stacked_grads)
    p_loop, s_loop = run(opt, params, grads)
    for a, b in zip(
        jax.tree_util.tree_leaves((p_loop, s_loop)),
        jax.tree_util.tree_leaves((p_scan, s_scan)),
        strict=True,
    ):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)


def test_dtypes_follow_params():
    # float32 leaves stay float32 (moments too) although lr is float64 under x64
    r = np.random.default_rng(0)
    params = {"a": r.normal(size=3).astype(np.float32), "b": r.normal(size=2)}
    grads = {"a": r.normal(size=3), "b": r.normal(size=2).astype(np.float32)}
    opt = optim.adam(0.1)
    state = opt.init(params)
    assert state["lr"].dtype == jnp.float64 and state["lr"].shape == ()
    assert state["step"].dtype == jnp.int32 and state["step"].shape == ()
    new, state = opt.update(grads, state, params)
    for tree in (new, state["m"], state["v"]):
        assert tree["a"].dtype == jnp.float32 and tree["b"].dtype == jnp.float64
    assert state["step"].dtype == jnp.int32
    s32 = opt.init(params, np.float32(0.1))
    assert s32["lr"].dtype == jnp.float32


def test_state_layout():
    params = make_params()
    keys = {
        "sgd": {"lr", "step"},
        "momentum": {"lr", "step", "v"},
        "adam": {"lr", "step", "m", "v"},
        "rmsprop": {"lr", "step", "s"},
    }
    for name, want in keys.items():
        state = optim.get(name, 0.1).init(params)
        assert type(state) is dict and set(state) == want
        for k in want - {"lr", "step"}:
            assert jax.tree_util.tree_structure(state[k]) == jax.tree_util.tree_structure(params)
            assert all(not np.any(np.asarray(x)) for x in jax.tree_util.tree_leaves(state[k]))


@pytest.mark.parametrize("make_opt", OPTS)
def test_state_round_trips_through_npz(make_opt, tmp_path):
    opt = make_opt()
    params = make_params()
    grads = make_grads(params)
    params, state = run(opt, params, grads[:2])
    leaves, treedef = jax.tree_util.tree_flatten(state)
    assert all(isinstance(x, jax.Array) for x in leaves)
    np.savez(tmp_path / "state.npz", *[np.asarray(x) for x in leaves])
    with np.load(tmp_path / "state.npz") as f:
        loaded = [f[f"arr_{i}"] for i in range(len(leaves))]
    restored = jax.tree_util.tree_unflatten(treedef, loaded)
    for a, b in zip(leaves, loaded, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.asarray(a), b)
    cont_a = run_from(opt, params, state, grads[2:])
    cont_b = run_from(opt, params, restored, grads[2:])
    for a, b in zip(
        jax.tree_util.tree_leaves(cont_a), jax.tree_util.tree_leaves(cont_b), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def run_from(opt, params, state, grads_seq):
    for g in grads_seq:
        params, state = opt.update(g, state, params)
    return params, state


# ---------------------------------------------------------------------------------------------
# Hyperparameter checks, lookup, description


@pytest.mark.parametrize(
    "ctor,kw,arg",
    [
        (optim.sgd, {"lr": -0.1}, "lr"),
        (optim.sgd, {"lr": float("nan")}, "lr"),
        (optim.sgd, {"lr": 0.1, "weight_decay": -1.0}, "weight_decay"),
        (optim.momentum, {"lr": -1}, "lr"),
        (optim.momentum, {"lr": 0.1, "beta": 1.0}, "beta"),
        (optim.momentum, {"lr": 0.1, "beta": -0.1}, "beta"),
        (optim.adam, {"lr": 0.1, "b1": 1.0}, "b1"),
        (optim.adam, {"lr": 0.1, "b2": 1.5}, "b2"),
        (optim.adam, {"lr": 0.1, "eps": 0.0}, "eps"),
        (optim.adam, {"lr": 0.1, "eps": -1e-8}, "eps"),
        (optim.rmsprop, {"lr": 0.1, "decay": 1.0}, "decay"),
        (optim.rmsprop, {"lr": 0.1, "eps": 0}, "eps"),
        (optim.step_decay, {"every": 0}, "every"),
        (optim.step_decay, {"every": 2, "factor": 0.0}, "factor"),
        (optim.cosine_decay, {"total_steps": 0}, "total_steps"),
        (optim.cosine_decay, {"total_steps": 5, "warmup": 5}, "warmup"),
        (optim.cosine_decay, {"total_steps": 5, "final": -0.1}, "final"),
        (optim.exponential_decay, {"rate": 0.0}, "rate"),
        (optim.exponential_decay, {"rate": 1.5}, "rate"),
    ],
)
def test_bad_hyperparameters_raise(ctor, kw, arg):
    with pytest.raises(ValueError, match=arg):
        ctor(**kw)


def test_lr_checks():
    opt = optim.adam(0.1)
    with pytest.raises(ValueError, match="lr"):
        opt.init(make_params(), -0.5)
    with pytest.raises(ValueError, match="lr"):
        opt.init(make_params(), jnp.ones(2))
    # lr is checked only when it is a Python number: arrays (maybe traced) pass through
    optim.sgd(jnp.asarray(0.1)).init(make_params())
    with pytest.raises(TypeError, match="floating"):
        opt.init({"a": np.arange(3)})


def test_by_name_and_description():
    for name in optim.NAMES:
        opt = optim.get(name, 0.01)
        assert opt.name == name and opt.hyperparams["lr"] == 0.01
        assert str(opt).startswith(f"{name}(lr=0.01")
        hash(opt)  # usable as a static argument
    opt = optim.get("momentum", 0.1, beta=0.5, nesterov=True)
    assert opt.hyperparams == {"lr": 0.1, "beta": 0.5, "nesterov": True, "weight_decay": 0.0}
    assert "schedule=CosineDecay" in str(optim.adam(1e-3, schedule=optim.cosine_decay(10)))
    with pytest.raises(ValueError, match="adagrad.*sgd, momentum, adam, adamw, rmsprop"):
        optim.get("adagrad", 0.1)
    with pytest.raises(TypeError, match="beta"):
        optim.get("sgd", 0.1, beta=0.9)


def test_get_is_the_lookup_and_the_old_name_is_gone():
    assert not hasattr(optim, "by_name") and "get" in optim.__all__
    opt = optim.get("adam", 1e-3, b1=0.8)
    assert opt.name == "adam" and opt.hyperparams["b1"] == 0.8
    assert str(opt) == str(optim.adam(1e-3, b1=0.8))
    with pytest.raises(ValueError, match="unknown optimizer 'adagrad'; choose one of: sgd"):
        optim.get("adagrad", 0.1)
    with pytest.raises(TypeError, match="sgd: unexpected argument.*nesterov; accepted: "):
        optim.get("sgd", 0.1, nesterov=True)


# ---------------------------------------------------------------------------------------------
# Properties (few distinct shapes, so that eager op compilation stays cached and fast)

SHAPES = st.lists(st.integers(1, 2), max_size=2).map(tuple)


@settings(max_examples=20, deadline=None)
@given(
    shapes=st.lists(SHAPES, min_size=1, max_size=4),
    seed=st.integers(0, 2**31 - 1),
    lr=st.floats(0.0, 10.0),
)
def test_sgd_step_is_p_minus_lr_g(shapes, seed, lr):
    r = np.random.default_rng(seed)
    params = [r.normal(size=s) for s in shapes]
    grads = [r.normal(size=s) for s in shapes]
    opt = optim.sgd(lr)
    new, state = opt.update(grads, opt.init(params), params)
    for n, p, g in zip(new, params, grads, strict=True):
        np.testing.assert_allclose(np.asarray(n), p - lr * g, rtol=1e-12, atol=1e-12)
    assert int(state["step"]) == 1


@settings(max_examples=20, deadline=None)
@given(
    shape=SHAPES,
    seed=st.integers(0, 2**31 - 1),
    lr=st.floats(1e-4, 1.0),
    name=st.sampled_from(optim.NAMES),
)
def test_zero_lr_freezes_and_first_step_descends(shape, seed, lr, name):
    r = np.random.default_rng(seed)
    params = {"x": r.normal(size=shape)}
    grads = [{"x": r.normal(size=shape)} for _ in range(3)]
    opt = optim.get(name, lr)
    frozen, _ = run(opt, params, grads, lr=0.0)
    np.testing.assert_array_equal(np.asarray(frozen["x"]), params["x"])
    # every rule's first step is -lr * c * g with c > 0 elementwise: it moves against the gradient
    first, _ = run(opt, params, grads[:1])
    np.testing.assert_array_equal(
        np.sign(np.asarray(first["x"]) - params["x"]), -np.sign(grads[0]["x"])
    )


# ---------------------------------------------------------------------------------------------
# Low-precision params: float32 arithmetic, float32 buffers


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("make", [lambda: optim.adam(1e-3), lambda: optim.rmsprop(1e-3),
                                  lambda: optim.momentum(0.1), lambda: optim.sgd(0.1)])
def test_low_precision_params_update_like_float32(dtype, make):
    opt = make()
    rng = np.random.default_rng(0)
    p32 = {"W": jnp.asarray(rng.normal(size=(8, 5)), jnp.float32)}
    g32 = {"W": jnp.asarray(rng.normal(size=(8, 5)) * 1e-3, jnp.float32)}
    p_low = jax.tree_util.tree_map(lambda a: a.astype(dtype), p32)
    state = opt.init(p_low)
    for slot in set(state) - {"lr", "step"}:
        assert state[slot]["W"].dtype == jnp.float32, slot
    new_low, state = jax.jit(opt.update)(jax.tree_util.tree_map(lambda a: a.astype(dtype), g32),
                                         state, p_low)
    assert new_low["W"].dtype == dtype
    assert bool(jnp.all(jnp.isfinite(new_low["W"].astype(jnp.float32))))
    ref, _ = opt.update(g32, opt.init(p_low_as_32 := jax.tree_util.tree_map(
        lambda a: a.astype(jnp.float32), p_low)), p_low_as_32)
    np.testing.assert_allclose(np.asarray(new_low["W"], np.float32), np.asarray(ref["W"]),
                               rtol=1e-2, atol=1e-2)


def test_a_string_learning_rate_is_refused():
    with pytest.raises(ValueError, match="lr must be a number or a scalar array, got '0.1'"):
        optim.momentum("0.1")


@pytest.mark.parametrize("make", [lambda: optim.sgd(0.1, l1=0.01), lambda: optim.adam(1e-2, l1=0.01),
                                  lambda: optim.momentum(0.1, l1=0.01, weight_decay=0.001)])
def test_l1_adds_the_gradient_of_l1_times_the_sum_of_absolute_values(make):
    opt = make()
    plain = optim.get(opt.name, opt.hyperparams["lr"],
                      **{k: v for k, v in opt.hyperparams.items() if k not in ("lr", "l1")})
    rng = np.random.default_rng(3)
    params = {"W": jnp.asarray(rng.normal(size=(4, 3)), jnp.float64)}
    grads = {"W": jnp.asarray(rng.normal(size=(4, 3)), jnp.float64)}
    l1_grad = jax.grad(lambda p: 0.01 * jnp.sum(jnp.abs(p["W"])))(params)
    expected, _ = plain.update(jax.tree_util.tree_map(jnp.add, grads, l1_grad),
                               plain.init(params), params)
    got, _ = opt.update(grads, opt.init(params), params)
    np.testing.assert_allclose(got["W"], expected["W"], rtol=1e-12)
    with pytest.raises(ValueError, match="l1 must be a finite number >= 0"):
        optim.sgd(0.1, l1=-1.0)


# ---------------------------------------------------------------------------------------------
# clip_by_global_norm: the wrapped optimizer's update on g · min(1, max_norm / ‖g‖₂)


def np_global_norm(grads):
    return math.sqrt(sum(float(np.sum(np.square(np.asarray(g, np.float64))))
                         for g in jax.tree_util.tree_leaves(grads)))


def assert_trees(got, want, **tol):
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        if tol:
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), **tol)
        else:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def scaled_tree(tree, factor):
    return jax.tree_util.tree_map(lambda g: np.asarray(g) * factor, tree)


@pytest.mark.parametrize("make_opt", OPTS)
def test_clipping_rescales_a_large_gradient_and_leaves_a_small_one_exactly(make_opt):
    inner = make_opt()
    params = small_params()
    grads = make_grads(params, steps=2)
    norms = [np_global_norm(g) for g in grads]
    small, large = 2 * max(norms), min(norms) / 4  # above every norm / below every norm
    for max_norm, clipped in ((small, False), (large, True)):
        opt = optim.clip_by_global_norm(inner, max_norm)
        # eager, op by op: the wrapped optimizer runs exactly the operations it would alone (a
        # compiled program of its own may fuse them differently, to the last bit)
        update, inner_update = opt.update, inner.update
        state, want_state = opt.init(params), inner.init(params)
        p, want_p = params, params
        for g, norm in zip(grads, norms):
            p, state = update(g, state, p)
            want_g = scaled_tree(g, max_norm / norm) if clipped else g
            want_p, want_state = inner_update(want_g, want_state, want_p)
            if clipped:  # the norm in float32: the same step to float32's rounding
                assert_trees((p, state), (want_p, want_state), rtol=1e-6, atol=1e-9)
            else:  # the factor is exactly 1: bit for bit the wrapped optimizer's
                assert_trees((p, state), (want_p, want_state))


def test_global_norm_and_the_clipped_gradient_itself():
    seen = []

    def record(grads, state, params):
        seen.append(grads)
        return params, state

    probe = optim.Optimizer(lambda params, lr=None: {}, record, "probe", {}, optim.constant())
    g = {"a": np.array([3.0, 0.0], np.float32), "b": (np.array([[4.0]], np.float32),)}
    assert float(optim.global_norm(g)) == 5.0
    optim.clip_by_global_norm(probe, 1.0).update(g, {}, g)
    np.testing.assert_allclose(seen[-1]["a"], [0.6, 0.0], rtol=1e-7)
    np.testing.assert_allclose(seen[-1]["b"][0], [[0.8]], rtol=1e-7)
    assert seen[-1]["a"].dtype == np.float32
    optim.clip_by_global_norm(probe, 5.0).update(g, {}, g)  # at the bound: untouched
    assert_trees(seen[-1], g)
    # float32 entries whose squares overflow are still clipped by the right factor
    huge = {"a": np.array([3e20, -4e20], np.float32)}
    assert float(optim.global_norm(huge)) == pytest.approx(5e20, rel=1e-6)
    optim.clip_by_global_norm(probe, 1.0).update(huge, {}, huge)
    np.testing.assert_allclose(seen[-1]["a"], [0.6, -0.8], rtol=1e-6)
    # zero gradients, and non-finite ones, pass through unscaled
    zeros = {"a": np.zeros(2, np.float32)}
    optim.clip_by_global_norm(probe, 1.0).update(zeros, {}, zeros)
    assert_trees(seen[-1], zeros)
    bad = {"a": np.array([np.inf, 1.0], np.float32), "b": np.array([np.nan], np.float32)}
    optim.clip_by_global_norm(probe, 1.0).update(bad, {}, bad)
    assert_trees(seen[-1], bad)
    # bfloat16 gradients: the norm in float32, the factor applied in their own dtype
    low = {"a": jnp.asarray([30.0, 40.0], jnp.bfloat16)}
    optim.clip_by_global_norm(probe, 5.0).update(low, {}, low)
    assert seen[-1]["a"].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(seen[-1]["a"], np.float32), [3.0, 4.0], rtol=1e-2)


def test_clipping_under_vmap_over_stacked_params():
    inner = optim.adam(0.05)
    opt = optim.clip_by_global_norm(inner, 1.0)
    models = [small_params(seed=s) for s in range(3)]
    # model 0's gradient is below the bound, the others' far above it
    grads = [jax.tree_util.tree_map(lambda g, k=k: g * k, make_grads(m, steps=1, seed=20 + i)[0])
             for i, (m, k) in enumerate(zip(models, (0.01, 3.0, 10.0)))]
    assert np_global_norm(grads[0]) < 1.0 < np_global_norm(grads[1])

    def stack(trees):
        return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)

    lrs = jnp.array([0.05, 0.01, 0.1])
    states = jax.vmap(opt.init)(stack(models), lrs)
    new_params, new_states = jax.jit(jax.vmap(opt.update))(stack(grads), states, stack(models))
    for i in range(3):
        alone = opt.update(grads[i], opt.init(models[i], float(lrs[i])), models[i])
        mine = jax.tree_util.tree_map(lambda x, i=i: np.asarray(x)[i], (new_params, new_states))
        # the float32 norm, summed in another order under vmap: float32's rounding
        assert_trees(mine, alone, rtol=1e-6, atol=1e-9)
    # model 0 unclipped: exactly the wrapped optimizer's step
    plain = inner.update(grads[0], inner.init(models[0], 0.05), models[0])
    assert_trees(jax.tree_util.tree_map(lambda x: np.asarray(x)[0], new_params), plain[0],
                 rtol=1e-15, atol=0)


def test_clipping_names_both_and_refuses_a_bad_bound():
    inner = optim.momentum(0.1, schedule=optim.cosine_decay(10))
    opt = optim.clip_by_global_norm(inner, 1.5)
    assert isinstance(opt, optim.Optimizer) and isinstance(opt, optim.ClippedOptimizer)
    assert str(opt) == f"clip_by_global_norm({inner}, max_norm=1.5)" == repr(opt)
    assert str(optim.clip_by_global_norm(optim.momentum(0.1, schedule=optim.cosine_decay(10)),
                                         1.5)) == str(opt)  # deterministic: no addresses
    assert str(opt) != str(inner) and str(optim.clip_by_global_norm(inner, 2)) != str(opt)
    assert "max_norm=2.0" in str(optim.clip_by_global_norm(inner, 2))
    assert opt.wrapped is inner and opt.max_norm == 1.5 and opt.schedule == inner.schedule
    twice = optim.clip_by_global_norm(opt, 0.5)
    assert str(twice) == f"clip_by_global_norm({opt}, max_norm=0.5)"
    state = opt.init(small_params(), 0.2)
    assert float(optim.lr_of(state, opt)) == pytest.approx(0.2)
    for bad in (0, -1.0, math.inf, math.nan, "1.0", True, None):
        with pytest.raises(ValueError, match=r"clip_by_global_norm: max_norm must be a finite "
                                             r"number > 0, got"):
            optim.clip_by_global_norm(inner, bad)
    with pytest.raises(TypeError, match="clip_by_global_norm: optimizer must be an "
                                        "fnnet.optim.Optimizer"):
        optim.clip_by_global_norm("adam", 1.0)


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_clipping_inside_fit(tmp_path):
    """Full-batch steps of a tiny model: the params ``fit`` reaches with a clipped sgd are the
    ones the clipped steps give by hand, the configuration records the wrapper, and it trains
    with float16 products and dynamic loss scaling (gradients unscaled before clipping)."""
    import fnnet
    from fnnet import checkpoints

    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    model = fnnet.mlp([3, 4, 2], "tanh", "softmax")
    key = jax.random.PRNGKey(0)
    max_norm, lr, steps = 0.05, 0.5, 3
    start = model.init(jax.random.PRNGKey(1))
    opt = optim.clip_by_global_norm(optim.sgd(lr), max_norm)
    path = tmp_path / "run.ckpt"
    state, history = fnnet.fit(model, "cross-entropy", opt, (x, y), epochs=steps, batch_size=None,
                               key=key, params=start, progress=False, checkpoint=path)
    assert checkpoints.metadata(path)["config"]["run"]["optimizer"] == str(opt)
    # by hand: the same start, each step the gradient rescaled to norm max_norm at most
    params = jax.tree_util.tree_map(np.asarray, start)
    grad_fn = jax.jit(fnnet.value_and_grad(model, "cross-entropy"))
    clipped_any = False
    for _ in range(steps):
        _, g = grad_fn(params, jnp.asarray(x), jnp.asarray(y))
        norm = np_global_norm(g)
        clipped_any |= norm > max_norm
        factor = min(1.0, max_norm / norm)
        params = jax.tree_util.tree_map(lambda p, g_, f=factor: p - lr * (np.asarray(g_) * f),
                                        params, g)
    assert clipped_any
    assert_trees(state.params, params, rtol=1e-5, atol=1e-6)
    # float16 products with dynamic loss scaling, and two models under vmap
    clipped_adam = optim.clip_by_global_norm(optim.adam(0.05), 1.0)
    state, history = fnnet.fit(model, "cross-entropy", clipped_adam, (x, y), epochs=2,
                               batch_size=8, key=key, progress=False, precision="f16",
                               lrs=[0.05, 0.01])
    assert np.all(np.isfinite(np.asarray(history["loss"])))
    assert all(np.all(np.isfinite(np.asarray(leaf)))
               for leaf in jax.tree_util.tree_leaves(state.params))
