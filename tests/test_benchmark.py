"""The benchmark (``fnnet.bench``) runs end to end in quick mode and writes what it promises; its
numpy baseline is the same network as fnnet's; its FLOP count is the documented one. No timing is
asserted."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet
from fnnet import bench
from fnnet.bench import baselines, cnn, harness, lstm, memory, mixed, profile, report

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # the quick benchmark end to end
def test_quick_benchmark_writes_metrics_and_chart(tmp_path, capsys):
    assert bench.main(["--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "targets" in printed and "matmul roof" in printed and "floor:" in printed

    report = json.loads((tmp_path / "metrics.json").read_text())
    png = (tmp_path / "benchmark.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"

    assert report["devices"] and report["quick"] is True
    assert report["machine"]["matmul"]["gflops"] > 0
    assert report["machine"]["bandwidth"]["gbs"] > 0
    assert set(report["workloads"]) == {"W1", "W2", "W3", "W4"}
    check_mlp_workloads(report["workloads"])
    check_w4(report["workloads"]["W4"], report["targets"], printed)
    w1 = report["workloads"]["W1"]
    assert "ms_per_iteration" in w1["results"]["fnnet manual"]
    # the full batch both ways, fit's "auto" choice first (issue 20: chosen by the machine)
    fnnet_f32 = {impl: w1["results"][impl]["chunk_size"]
                 for impl in ("fnnet manual", harness.CHUNKED, harness.UNCHUNKED)
                 if impl in w1["results"]}
    assert len(fnnet_f32) == 2 and {c is None for c in fnnet_f32.values()} == {True, False}
    assert w1["floor"]["auto_chunk_size"] == fnnet_f32["fnnet manual"]
    floor = w1["floor"]
    for key in ("memory_floor_ms", "compute_floor_ms", "binding", "chunked_over_memory_floor",
                "unchunked_over_memory_floor", "x_read_ms_measured"):
        assert key in floor
    assert floor["x_bytes"] == 1024 * 784 * 4
    prof = report["profile"]
    if report["platform"] == "cpu":
        assert 0 < prof["matrix_products_seconds"] <= prof["ops_seconds"], prof
        assert prof["top"] and any(t["matrix_product"] for t in prof["top"])
        assert "matrix products" in printed
    check_memory_and_targets(report)


def check_mlp_workloads(workloads):
    """W1–W3: every implementation timed, the ratios complete, the same matrix products."""
    impls = {"fnnet manual", "fnnet autodiff", "numpy"}
    torch_ran = baselines.torch_available()
    if torch_ran:
        impls.add("torch eager")
    for name in ("W1", "W2", "W3"):
        w = workloads[name]
        results = w["results"]
        assert impls <= set(results), name
        assert torch_ran or "torch eager" in w["skipped"]
        for impl in impls:
            r = results[impl]
            assert len(r["seconds_all"]) >= 2 and r["examples_per_second"] > 0
            assert r["gflops"] > 0 and r["fraction_of_roof"] > 0
            assert np.isfinite(r["last_loss"])
        for impl in ("fnnet manual", "fnnet autodiff"):
            assert results[impl]["compile_seconds"] > 0
        assert set(w["ratios"]["fnnet manual"]) == set(results) - {"fnnet manual"}
        assert set(w["paired_ratios"]["numpy"]) == set(results) - {"numpy"}
        assert w["roof_gflops"] > 0
        # the hand-derived backward compiles to exactly the matrix products jax.grad's does
        assert w["manual_vs_autodiff"]["same_matrix_products"], name
        assert w["manual_vs_autodiff"]["matrix_products"] >= 2 * (len(w["sizes"]) - 1) + 1, name


def check_w4(w4, targets, printed):
    """W4 at its quick sizes: the CNN's step FLOPs, a unit's examples, autodiff on fewer steps and
    running XLA's convolutions, the targets; no time to accuracy with --quick."""
    cfg = harness.QUICK["W4"]
    results, batch = w4["results"], cfg["batch"]
    assert {"fnnet manual", "fnnet autodiff"} <= set(results)
    assert ("torch eager" in results) == baselines.torch_available() != ("torch eager" in w4["skipped"])
    assert w4["flops_per_step"] == cnn.cnn_step_flops(fnnet.cnn(**cfg["cnn"]), cnn.IMAGE, batch)["total"]
    assert results["fnnet manual"]["examples_per_unit"] == cfg["steps"] * batch
    assert results["fnnet autodiff"]["examples_per_unit"] == cfg["autodiff_steps"] * batch
    for impl, r in results.items():
        assert len(r["seconds_all"]) >= 2 and r["examples_per_second"] > 0, impl
        assert r["flops_per_unit"] == w4["flops_per_step"] * r["examples_per_unit"] // batch
        assert r["gflops"] > 0 and r["fraction_of_roof"] > 0 and np.isfinite(r["last_loss"])
    assert w4["paired_ratios"]["fnnet manual"]["fnnet autodiff"] > 0
    # the manual program is im2col matrix products; jax.grad of apply runs lax.conv
    assert w4["manual_vs_autodiff"]["hlo_convolutions"][0] == 0
    assert w4["manual_vs_autodiff"]["hlo_convolutions"][1] > 0
    assert "off in --quick" in w4["time_to_accuracy"]["skipped"]
    assert targets["W4: fnnet manual >= 10.0x fnnet autodiff"]["value"] > 0
    assert "W4: fnnet >= 1.2x torch eager" in targets
    assert targets["W4: 99% test accuracy in < 60 s, compile included"]["met"] is None
    assert "XLA convolutions" in printed and "MFLOP per example" in printed


def check_memory_and_targets(report):
    """W3's peak memory and the targets' fields."""
    mem = report["peak_memory"]
    assert "error" not in mem, mem
    assert mem["peak_rss"] > mem["runtime"] > 0
    assert tuple(mem["stages"]) == memory.STAGES == (
        "imports", "start the runtime", "load data (host)", "data to device", "compile",
        "train one epoch")
    assert mem["expected"]["data"] == 1024 * 784 * 4 + 1024 * 4
    if report["platform"] == "cpu":
        assert mem["data_shared_with_host"] is True, "the CPU device should use the host array itself"
    targets = report["targets"]
    assert "W3: fnnet >= 90% of the matmul roof" in targets
    assert "W1: within 1.5x of the single-read floor" in targets
    assert all({"value", "met"} <= set(t) for t in targets.values())
    assert targets["W3: fnnet manual >= 1.0x fnnet autodiff"]["same_matrix_products"] is True
    held = targets["W3: training holds <= 1.1x data once + params, grads, state, batch"]
    assert held["value"] > 0 and held["data_held_once"] is True


@pytest.mark.slow  # the quick W5 end to end: four small LSTM programs compiled
def test_quick_lstm_workload_reports_tokens_and_the_same_loss(tmp_path, capsys):
    """W5 at its quick sizes: tokens per second for every implementation, the per-token FLOPs of
    its docstring, the targets, and fnnet's manual and autodiff programs taking the same steps
    (the same loss after the first unit and after the last)."""
    assert bench.main(["--quick", "--workloads", "W5", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    report_ = json.loads((tmp_path / "metrics.json").read_text())
    assert set(report_["workloads"]) == {"W5"} and "profile" not in report_
    w5, cfg = report_["workloads"]["W5"], harness.QUICK["W5"]
    arch, batch, block = cfg["lstm"], cfg["batch"], cfg["block"]
    results = w5["results"]
    assert {"fnnet manual", "fnnet autodiff"} <= set(results)
    assert ("torch eager" in results) == baselines.torch_available() != ("torch eager" in w5["skipped"])
    bf16 = mixed.bf16_columns("auto", mixed.cpu_description(), jax.default_backend())[0]
    assert ("fnnet manual bf16" in results) == bf16 == (w5["bf16"] == "timed")
    tokens = cfg["steps"] * batch * block
    assert w5["tokens_per_unit"] == tokens and w5["speed_unit"] == "tok/s"
    assert w5["data_source"] in ("shakespeare", "random")
    d, h, v = arch["dim"], arch["hidden"], arch["vocab_size"]
    assert w5["flops_per_token"] == 3 * 2 * (d * 4 * h + h * 4 * h + h * v)
    for impl, r in results.items():
        assert len(r["seconds_all"]) >= 2 and r["examples_per_second"] > 0, impl
        assert r["examples_per_unit"] == tokens and r["flops_per_unit"] == w5["flops_per_token"] * tokens
        assert r["gflops"] > 0 and r["fraction_of_roof"] > 0 and np.isfinite(r["last_loss"])
    manual, autodiff = results["fnnet manual"], results["fnnet autodiff"]
    assert manual["first_loss"] == pytest.approx(autodiff["first_loss"], rel=1e-5)
    assert manual["last_loss"] == pytest.approx(autodiff["last_loss"], rel=1e-4)
    assert manual["last_loss"] < manual["first_loss"]  # the same units trained it
    assert set(w5["paired_ratios"]["fnnet manual"]) == set(results) - {"fnnet manual"}
    # the hand-derived backward sums dW_h in one product after the time loop, jax.grad inside it
    products = w5["recurrent_products"]
    assert products["fnnet manual"]["dW_h_rows"] == batch * block and not products["fnnet manual"]["in_loop"]
    assert products["fnnet autodiff"]["dW_h_rows"] == batch and products["fnnet autodiff"]["in_loop"]
    targets = report_["targets"]
    assert targets["W5: fnnet manual >= 1.3x fnnet autodiff"]["value"] > 0
    assert "W5: fnnet >= 1.2x torch eager" in targets
    assert not [t for t in targets if t.startswith("W5: compile")]
    assert "tok/s" in printed and "MFLOP per token" in printed and "dW_h contracted over" in printed


def test_lstm_flop_count_is_the_documented_one():
    """W5: 3 · 2 · (D·4H + H·4H + H·V) per token; 7,277,568 for the CLI's model."""
    count = lstm.token_flops(64, 512, 65)
    assert count["total"] == 3 * 2 * (64 * 2048 + 512 * 2048 + 512 * 65) == 7_277_568
    assert count["terms"]["recurrent product"]["forward"] == 2 * 512 * 2048
    assert set(count["terms"]["dense head"]) == {"forward", "dW", "dX"}


def test_lstm_windows_are_next_character_pairs():
    x, y, source = lstm.text_windows(5, 7, 65, 0)
    assert x.shape == y.shape == (5, 7) and x.dtype == y.dtype == np.int32
    assert source in ("shakespeare", "random") and x.max() < 65 and x.min() >= 0
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # y is x one step later


def test_dw_h_rows_reads_where_the_products_sum():
    after = ["f32[64,16]{1,0} = dot(f32[48,64]{1,0}, f32[48,16]{1,0}) lhs_contracting_dims={0}, "
             "rhs_contracting_dims={0}",
             "f32[64,16]{1,0} = dot(f32[64,65]{1,0}, f32[65,16]{1,0}) lhs_contracting_dims={1}, "
             "rhs_contracting_dims={0}"]
    assert lstm.dw_h_rows(after, 16, (8, 48)) == 48
    assert lstm.dw_h_rows(after[1:], 16, (8, 48)) is None  # the head's dX has the shape too
    inside = [after[0].replace("48", "8")]
    assert lstm.recurrent_products({"a": {"matrix_products": inside}}, 16, 8, 6) == {
        "a": {"products": 1, "dW_h_rows": 8, "in_loop": True}}


@pytest.mark.parametrize("argv, message", [
    (["--workloads", "W9"], "unknown workloads"),
    (["--repeats", "0"], "--repeats must be at least 1"),
    (["--baseline-threads", "many"], "--baseline-threads must be"),
])
def test_bad_arguments_are_reported(argv, message, tmp_path, capsys):
    assert bench.main([*argv, "--quick", "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "metrics.json").exists()


def test_flop_count_is_the_documented_one():
    # W1: 2 N (3 (784·10 + 10·10) − 784·10) per full-batch iteration over N = 60,000
    assert harness.train_step_flops((784, 10, 10), 60_000) == 2 * 60_000 * (3 * 7940 - 7840)
    assert harness.train_step_flops((784, 10, 10), 60_000) == pytest.approx(1.9176e9)
    # W3: forward + dW for the three layers, dX for the last two
    pairs = [784 * 1024, 1024 * 1024, 1024 * 10]
    assert harness.train_step_flops((784, 1024, 1024, 10), 128) == (
        2 * 128 * sum(pairs) * 2 + 2 * 128 * sum(pairs[1:]))


def test_cnn_flop_count_is_the_documented_one():
    """W4: forward, dW and dX of each conv (2·B·OH·OW·kh·kw·Cin·Cout) and dense layer, no dX for
    the first layer; for fnnet.cnn() 15,396,864 FLOPs per example."""
    conv1, conv2 = 2 * 26 * 26 * 9 * 1 * 32, 2 * 11 * 11 * 9 * 32 * 64
    dense1, dense2 = 2 * 1600 * 128, 2 * 128 * 10
    per_example = 2 * (conv1 + conv2 + dense1 + dense2) + conv2 + dense1 + dense2
    assert per_example == 15_396_864
    count = cnn.cnn_step_flops(fnnet.cnn(), cnn.IMAGE, 128)
    assert count["total"] == 128 * per_example
    assert [r["forward"] for r in count["layers"]] == [128 * f for f in (conv1, conv2, dense1, dense2)]
    assert count["layers"][0]["dX"] == 0 and count["layers"][1]["dX"] == 128 * conv2


def test_time_to_accuracy_stops_at_the_first_epoch_on_target(monkeypatch):
    """The callback records every epoch and ends fit at the first that reaches the target (fit
    stubbed: its epochs report fixed test accuracies); the target line reads the figure."""
    if cnn.accuracy_data({"train": 1, "test": 1}) is None:
        if os.environ.get("CI"):
            pytest.fail("MNIST not found (FNNET_DATA_DIR); CI is set, so the data must be there")
        pytest.skip("MNIST not found (FNNET_DATA_DIR)")
    seen, recipe = {}, {}

    def fake_fit(model, loss, optimizer, train, epochs, batch_size, key, validation, progress,
                 callbacks):
        seen.update(images=train[0].shape, test=validation[0].shape, epochs=epochs)
        recipe.update(optimizer=optimizer, batch=batch_size)
        for epoch, accuracy in enumerate((0.95, 0.985, 0.991, 0.995)[:epochs], start=1):
            record = SimpleNamespace(epoch=epoch, seconds=0.0, loss=0.1, val_accuracy=accuracy)
            for callback in callbacks:
                callback(record, None, None)

    monkeypatch.setattr(fnnet, "fit", fake_fit)
    cfg = {**harness.FULL["W4"], "accuracy": {"target": 0.99, "epochs": 15, "train": 64, "test": 32}}
    out = cnn.time_to_accuracy(cfg, 0, lambda msg: None)
    assert seen == {"images": (64, 28, 28, 1), "test": (32, 28, 28, 1), "epochs": 15}
    defaults = fnnet.cli.train.CNN_DEFAULTS  # issue 20: the recipe fnnet train --model cnn uses
    assert recipe["batch"] == defaults["batch_size"]
    assert recipe["optimizer"].name == defaults["optimizer"]
    assert recipe["optimizer"].hyperparams["lr"] == defaults["lr"]
    assert recipe["optimizer"].schedule == fnnet.optim.exponential_decay(
        defaults["lr_decay"], 64 // defaults["batch_size"])
    assert out["reached"] and out["epoch"] == 3 and len(out["epochs"]) == 3 and out["subset"]
    assert out["seconds"] == out["epochs"][-1]["seconds_since_start"] >= 0
    assert report.accuracy_target(out)["met"] is None  # a subset is not the figure
    assert report.accuracy_target({**out, "subset": False})["met"] is True
    assert report.accuracy_target({**out, "subset": False, "seconds": 61.0})["met"] is False
    out = cnn.time_to_accuracy({**cfg, "accuracy": {**cfg["accuracy"], "epochs": 2}}, 0,
                               lambda msg: None)
    assert not out["reached"] and out["seconds"] is None and len(out["epochs"]) == 2
    assert report.accuracy_target({**out, "subset": False})["met"] is False


def test_torch_cnn_has_the_layers_of_fnnet_cnn():
    torch = pytest.importorskip("torch")
    layers = baselines.torch_layers(fnnet.cnn())
    assert [type(layer).__name__ for layer in layers] == [
        "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d", "Flatten", "Dropout",
        "Linear", "ReLU", "Linear"]
    out = torch.nn.Sequential(*layers)(torch.zeros(2, 1, 28, 28))
    assert tuple(out.shape) == (2, 10)


def test_numpy_baseline_takes_the_same_step_as_fnnet():
    sizes, lr = (784, 16, 10), 0.1
    rng = np.random.default_rng(0)
    x = rng.random((32, 784), dtype=np.float32)
    y = rng.integers(0, 10, 32).astype(np.int32)
    params = baselines.numpy_init(sizes, rng)
    model = fnnet.mlp(sizes)
    fn_params = (fnnet.DenseParams(jnp.asarray(params[0][0]), jnp.asarray(params[0][1])), (),
                 fnnet.DenseParams(jnp.asarray(params[1][0]), jnp.asarray(params[1][1])), ())
    opt = fnnet.optim.sgd(lr)
    step = jax.jit(fnnet.train_step(model, "cross-entropy", opt))
    state = fnnet.TrainState.create(model, opt, jax.random.PRNGKey(0), params=fn_params)
    state, stats = step(state, jnp.asarray(x), jnp.asarray(y), jax.random.PRNGKey(1))
    new_params, loss = state.params, stats["loss"]
    np_loss = baselines.numpy_step(params, x, np.eye(10, dtype=np.float32)[y], np.float32(lr))
    assert np_loss == pytest.approx(float(loss), rel=1e-5)
    for (W, b), p in zip(params, (new_params[0], new_params[2])):
        assert W.dtype == np.float32
        np.testing.assert_allclose(W, p.W, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b, p.b, rtol=1e-5, atol=1e-6)


def test_dot_ops_finds_the_matrix_products_in_optimized_hlo():
    f = jax.jit(lambda a, w, v: jax.nn.relu(a @ w) @ v + 1.0)
    a, w, v = jnp.ones((8, 5)), jnp.ones((5, 7)), jnp.ones((7, 3))
    hlo = f.lower(a, w, v).compile().as_text()
    ops, dots = profile.dot_ops(hlo)
    assert dots and dots <= ops
    assert ops - dots, "the ReLU and the add are operations but not matrix products"
    sigs = profile.dot_signatures(hlo)
    assert len(sigs) == 2, sigs  # two products, however XLA fuses them
    assert any("[8,5]" in s_ and "[5,7]" in s_ for s_ in sigs), sigs  # operand shapes count


def test_fit_epoch_is_the_program_fit_runs():
    """The benchmark times ``fnnet.EpochRunner``'s program from ``fnnet.TrainState.create``: the
    same first state as ``create`` with the seed's key, and an epoch that trains."""
    cfg = {"sizes": (784, 8, 10), "batch": 16, "lr": 0.1}
    x, y, _ = harness.load_data(64, 0)
    xd, yd = fnnet.to_device(x, y)
    program, state, chunk = harness.fit_epoch(cfg, xd, yd, 3)
    assert chunk is None  # minibatches are never chunked
    model, opt = fnnet.mlp(cfg["sizes"]), fnnet.optim.sgd(cfg["lr"])
    want = fnnet.TrainState.create(model, opt, jax.random.PRNGKey(3))
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    new, stats = jax.jit(program)(state, xd, yd)
    assert isinstance(new, fnnet.TrainState) and int(stats["step"]) == 4
    assert np.isfinite(float(stats["loss_sum"]))


def test_time_calls_runs_at_least_repeats_and_stops_at_the_budget():
    calls = []
    times = harness.time_calls(lambda: calls.append(1), 3, warmup=2)
    assert len(times) == 3 and len(calls) == 5
    times = harness.time_calls(lambda: None, 2, warmup=0, budget_s=10.0, max_repeats=7)
    assert len(times) == 7  # under budget: up to max_repeats
    assert harness.median([3.0, 1.0, 2.0]) == 2.0
    assert harness.paired([1.0, 2.0, 4.0], [2.0, 2.0, 2.0]) == 1.0


@pytest.mark.slow  # a subprocess
def test_runs_as_a_module_and_without_the_experiments_folder(tmp_path):
    """``python -m fnnet.bench --help`` works from any folder (a pip user's), and fnnet.bench
    imports nothing from ``experiments``; ``python -m experiments.benchmark`` still runs it."""
    code = ("import sys, runpy\n"
            "sys.argv = ['fnnet.bench', '--help']\n"
            "try:\n"
            "    runpy.run_module('fnnet.bench', run_name='__main__')\n"
            "except SystemExit as e:\n"
            "    assert e.code in (0, None), e.code\n"
            "assert not [m for m in sys.modules if m.split('.')[0] == 'experiments'], 'experiments'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "--workloads" in done.stdout and "python -m fnnet.bench" in done.stdout
    done = subprocess.run([sys.executable, "-m", "experiments.benchmark", "--workloads", "W9"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "unknown workloads" in done.stderr


def test_bf16_columns_are_timed_where_the_cpu_has_bf16_units_or_when_asked():
    units = {"model": "Some CPU", "bf16_units": ["avx512_bf16"]}
    none = {"model": "Old CPU", "bf16_units": []}
    assert mixed.bf16_columns("auto", units) == (True, "timed")
    assert mixed.bf16_columns("auto", none, "gpu") == (True, "timed")
    timed, why = mixed.bf16_columns("auto", none)
    assert not timed and "Old CPU" in why and "no bfloat16 matrix units" in why and "--bf16" in why
    timed, why = mixed.bf16_columns("on", none)
    assert timed and "emulated" in why
    assert mixed.bf16_columns("off", units) == (False, "off (--no-bf16)")
    with pytest.raises(ValueError, match="bf16 columns: expected 'auto', 'on' or 'off'"):
        mixed.bf16_columns("yes", units)


def test_bf16_targets_judge_the_cnn_against_autocast_where_the_cpu_has_units():
    """W4's bf16 target (fnnet bf16 >= 1.0x PyTorch autocast, paired) is judged like W3's: met or
    missed on a CPU with bfloat16 units, reported without a verdict elsewhere."""
    def workloads(ratio):
        return {"W4": {"results": {"fnnet manual bf16": {}, "torch autocast bf16": {}},
                       "paired_ratios": {"fnnet manual bf16": {"torch autocast bf16": ratio}}}}

    label = "W4: fnnet bf16 >= 1.0x torch autocast bf16"
    units = {"bf16_units": ["avx512_bf16"]}
    assert mixed.targets(workloads(0.98), units)[label] == {"value": 0.98, "met": False}
    assert mixed.targets(workloads(1.02), units)[label] == {"value": 1.02, "met": True}
    unjudged = mixed.targets(workloads(1.02), {"bf16_units": []})[label]
    assert unjudged["met"] is None and "no bfloat16 matrix units" in unjudged["note"]


@pytest.mark.slow  # a quick run of W2
def test_a_cpu_without_bf16_units_skips_the_bf16_columns_unless_asked(tmp_path, capsys,
                                                                      monkeypatch):
    """Issue 20: on a CPU without bfloat16 units the default benchmark leaves the (emulated, slow)
    bf16 columns out and says so; ``--bf16`` asks for them."""
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    monkeypatch.setattr(mixed, "cpu_description",
                        lambda: {"model": "Old CPU", "machine": "x86_64", "flags": ["avx2"],
                                 "cores": 2, "bf16_units": []})
    flags = ["--quick", "--workloads", "W2", "--no-profile", "--no-memory", "--repeats", "1"]
    assert bench.main([*flags, "--out", str(tmp_path / "auto")]) == 0
    printed = capsys.readouterr().out
    assert "bf16 columns not timed: this CPU (Old CPU) has no bfloat16 matrix units" in printed
    report_ = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    assert report_["bf16"].startswith("not timed")
    assert not any("bf16" in impl for impl in report_["workloads"]["W2"]["results"])
    # --bf16 reaches the decision as "on" (timed: the first test), --no-bf16 as "off"
    assert [bench._parse_args([*flags, *f])[0].bf16 for f in ([], ["--bf16"], ["--no-bf16"])] == [
        "auto", "on", "off"]
    with pytest.raises(SystemExit):
        bench.main([*flags, "--bf16", "--no-bf16"])
