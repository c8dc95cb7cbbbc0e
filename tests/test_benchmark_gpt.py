"""W6 (``fnnet.bench.gpt``): the FLOP count, the PyTorch twin of ``fnnet.gpt``, and the quick
run's report (structure, manual and autodiff on the same losses, the memory ratio). No timed
assertions: the figures depend on the machine and its load."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet
from fnnet import bench
from fnnet.bench import baselines, gpt, workload


def test_token_flops_is_three_forwards_of_the_recipe():
    count = gpt.token_flops(layers=4, dim=128, vocab=65, context=64)
    assert count["forward"] == 24 * 4 * 128**2 + 2 * 65 * 128 + 4 * 64 * 128 * 4
    assert count["total"] == 3 * count["forward"] == 5_161_728
    assert sum(count["terms"].values()) == count["forward"]


def test_the_benchmark_modules_run_as_scripts_without_a_warning():
    """``python -m fnnet.bench.gpt`` and ``python -m fnnet.bench.startup``, as the benchmark pages
    give them: the package must not import either first (runpy then warns that the module "may
    result in unpredictable behaviour"). Every warning is an error here."""
    code = ("import runpy, sys, warnings\n"
            "warnings.simplefilter('error')\n"
            "for name in ('fnnet.bench.gpt', 'fnnet.bench.startup'):\n"
            "    sys.argv = [name, '--help']\n"
            "    try:\n"
            "        runpy.run_module(name, run_name='__main__', alter_sys=True)\n"
            "    except SystemExit as e:\n"
            "        assert e.code == 0, (name, e.code)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage: python -m fnnet.bench.gpt" in done.stdout
    assert "usage: python -m fnnet.bench.startup" in done.stdout


def test_torch_is_skipped_with_a_message_when_missing(monkeypatch):
    monkeypatch.setattr(baselines, "torch_available", lambda: False)
    lines = []
    units, infos, skipped, threads = workload.set_up(
        "W6", {gpt.TORCH: lambda: pytest.fail("the torch runner must not be built")}, 1, "auto",
        lines.append)
    assert not units and not threads
    assert "torch is not installed" in skipped[gpt.TORCH]
    assert any("skipped" in line for line in lines)


@pytest.mark.slow
def test_torch_gpt_computes_fnnet_gpts_logits():
    """The PyTorch twin is the same function: fnnet's params copied in, the same logits."""
    torch = pytest.importorskip("torch")
    from fnnet.bench import torch_gpt

    arch = gpt.QUICK["gpt"]
    layer = fnnet.gpt(arch["vocab_size"], arch["block_size"], arch["layers"], arch["heads"],
                      arch["dim"]).layers[0]
    params = layer.init(jax.random.PRNGKey(3), jnp.float32)
    ids = np.random.default_rng(0).integers(0, arch["vocab_size"], (3, arch["block_size"]))
    want = np.asarray(layer.apply(params, jnp.asarray(ids, jnp.int32)))

    def copy(dst, src):
        with torch.no_grad():
            dst.copy_(torch.from_numpy(np.array(src, np.float32)))

    for attention in torch_gpt.ATTENTION:
        model = torch_gpt.build(arch, attention)
        copy(model.wte.weight, params.wte.W)
        copy(model.wpe.weight, params.wpe.W)
        copy(model.ln_f.weight, params.ln_f.gamma)
        copy(model.ln_f.bias, params.ln_f.beta)
        for block, ((ln1, attn), (ln2, fc, _, proj, _)) in zip(model.blocks, params.blocks):
            for norm, p in ((block.ln_1, ln1), (block.ln_2, ln2)):
                copy(norm.weight, p.gamma)
                copy(norm.bias, p.beta)
            for linear, p in ((block.attn.c_attn, attn.qkv), (block.attn.c_proj, attn.proj),
                              (block.c_fc, fc), (block.c_proj, proj)):
                copy(linear.weight, p.W)
                copy(linear.bias, p.b)
        got = model(torch.from_numpy(ids)).detach().numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=attention)
    decay, rest = (g["params"] for g in torch_gpt.optimizer(model, 1e-3, (0.9, 0.99),
                                                            0.1).param_groups)
    assert len(decay) == 2 + 4 * arch["layers"]  # both tables, four matrices a block
    assert all(p.dim() == 1 for p in rest)


@pytest.mark.slow
def test_quick_run_reports_every_figure_and_agreeing_losses(tmp_path, monkeypatch, capsys):
    """``python -m fnnet.bench.gpt --quick`` (through ``main``): the report's structure, manual
    and autodiff on the same loss after the same steps (same init, same windows), the memory
    ratio of the three compiled steps, metrics.json written."""
    report = gpt.main(["--quick", "--repeats", "2", "--no-bf16", "--threads", "1",
                       "--out", str(tmp_path)])
    results = report["results"]
    assert {gpt.MANUAL, gpt.AUTODIFF} <= set(results)
    assert (gpt.TORCH in results) == baselines.torch_available()
    assert gpt.TORCH in results or gpt.TORCH in report["skipped"]
    for impl, r in results.items():
        assert r["ms_per_step"] > 0 and r["tokens_per_second"] > 0, impl
        assert len(r["seconds_all"]) == 2
        assert np.isfinite(r["last_loss"]), impl
    cfg = gpt.QUICK
    assert report["tokens_per_step"] == cfg["batch"] * cfg["block"]
    assert report["flops_per_token"] == gpt.token_flops(
        cfg["gpt"]["layers"], cfg["gpt"]["dim"], cfg["gpt"]["vocab_size"], cfg["block"])["total"]
    assert report["paired_ratios"][gpt.MANUAL][gpt.AUTODIFF] > 0
    assert results[gpt.MANUAL]["matrix_products"] and results[gpt.AUTODIFF]["matrix_products"]

    agree = report["loss_agreement"]
    assert agree["units"] == 3  # the warm-up and two rounds
    assert agree["max_abs_diff"] < 1e-5
    assert results[gpt.MANUAL]["losses"][0] == pytest.approx(results[gpt.AUTODIFF]["losses"][0],
                                                             abs=1e-6)

    memory = report["memory"]
    assert memory["T"] == cfg["memory"]["t"]
    assert set(memory["temp_bytes"]) == {"lean backward", "P-keeping backward", "jax.grad"}
    assert all(v > 0 for v in memory["temp_bytes"].values())
    assert memory["lean_over_autodiff"] == pytest.approx(
        memory["temp_bytes"]["lean backward"] / memory["temp_bytes"]["jax.grad"])
    assert 0 < memory["lean_over_autodiff"] < 1  # two blocks of 128 rows already keep less

    labels = list(report["targets"])
    assert any("jax.grad" in label for label in labels)
    assert any("temporaries" in label for label in labels)
    assert all(t["met"] is None for label, t in report["targets"].items()
               if "temporaries" in label)  # judged at T = 2048 only
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["W6"]["loss_agreement"]["units"] == 3
    assert "time_to_loss" not in written["W6"]  # --quick leaves it out

    # the same workload in the main benchmark, python -m fnnet.bench --workloads W6 (the
    # measurement reused: what is checked is the wiring, the table and the targets)
    calls = []

    def measured(repeats, seed, log, **options):
        calls.append(options)
        return report

    monkeypatch.setattr(gpt, "measure_gpt", measured)
    assert bench.main(["--quick", "--workloads", "W6", "--no-bf16", "--out",
                       str(tmp_path / "main")]) == 0
    assert calls == [{"quick": True, "bf16": "off", "threads": "auto", "memory": True}]
    printed = capsys.readouterr().out
    assert "GFLOP per step: projections, attention" in printed and "temporaries of one step" in printed
    main = json.loads((tmp_path / "main" / "metrics.json").read_text())
    assert set(main["workloads"]) == {"W6"}
    assert {"W6: fnnet manual >= 1.2x fnnet autodiff", "W6: fnnet >= 2.0x torch eager"} <= set(
        main["targets"])
    assert any(label.startswith("W6: lean backward's temporaries") for label in main["targets"])
