"""Run every experiment and build the results page from what they measured.

    python -m experiments.run_all [--quick] [--out runs/] [--only NAMES] [--seed S]
                                  [--readme PATH | --publish]

Everything is written under ``--out``: the page goes to ``OUT/README.md`` unless ``--readme`` says
otherwise; ``--publish`` regenerates the committed page, ``experiments/README.md``, and its
figures instead.

Each experiment ``NAME`` is imported as ``experiments.NAME`` and called in this process as
``main(["--out", OUT/NAME, ...])``. One that is missing or fails is reported and the others still
run; the exit status is then 1. Next to each experiment's ``metrics.json`` goes ``run_info.json``:
status, whether ``--quick`` was used, start and end time, seconds, the command and the machine.

The README is then rebuilt from the folders under ``--out``, for all experiments, whether run now
or earlier (so full runs of some and quick runs of others can be combined; each section says
which it was). Per experiment: the note and equations it reproduces (its module docstring), the
command, a table of its headline numbers read from its ``metrics.json`` (its ``"headline"`` entry
when it has one, else its top-level scalar entries; plus any tables in its ``"tables"`` entry), and
its PNG figures (in the order of its ``"figures"`` entry, if any), copied (scaled down to at
most ``MAX_WIDTH`` pixels wide) into ``figures/NAME/`` beside the README and linked relatively. No
number on the page is typed by hand.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import os
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path

from experiments import common
from fnnet import io

EXPERIMENTS = (
    "single_neuron",
    "two_hidden_layers",
    "xor",
    "mnist_relu_softmax",
    "mnist_sigmoid_bce",
    "mnist_tanh_mse",
    "manual_vs_autodiff",
    "forward_vs_reverse",
    "sweep",
    "conv_by_hand",
    "batchnorm_by_hand",
    "rnn_by_hand",
    "char_lstm",
    "mnist_cnn",
    "attention_by_hand",
    "shakespeare_gpt",
)
DEFAULT_README = Path(__file__).resolve().parent / "README.md"
PROJECT_README = Path(__file__).resolve().parents[1] / "README.md"
MAX_WIDTH = 900  # pixels; matplotlib's 120 dpi figures come out at about 90 dpi
MAX_ROWS = 25  # headline rows shown per experiment


def now():
    """The local time, to the second, ISO 8601 with its UTC offset."""
    return _dt.datetime.now().astimezone().replace(microsecond=0).isoformat()


def machine_info():
    """Platform, CPU count, Python and jax versions, and jax's default device."""
    import jax

    devices = jax.devices()
    kind = getattr(devices[0], "device_kind", devices[0].platform)
    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "device": f"{len(devices)} x {devices[0].platform} ({kind})",
    }


def describe_machine(m):
    """One line describing ``machine_info()``'s dict."""
    return (f"{m.get('platform')}, {m.get('cpu_count')} CPUs, Python {m.get('python')}, "
            f"jax {m.get('jax')}, device {m.get('device')}")


def folder(text):
    """``--out``: a folder path; an empty value is refused (``Path("")`` would be the current
    folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder, got an empty value")
    return Path(text)


def parse_names(values):
    """``--only`` values (comma- or space-separated, repeatable) as a list of known names."""
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--only needs at least one name, from {', '.join(EXPERIMENTS)}")
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"unknown experiment(s) {', '.join(unknown)}; expected names from "
                         f"{', '.join(EXPERIMENTS)}")
    return [n for n in EXPERIMENTS if n in names]


def command_for(name, out_dir, quick, seed):
    """The command line that reproduces one experiment's run."""
    cmd = f"python -m experiments.{name} --out {out_dir}"
    if quick:
        cmd += " --quick"
    if seed is not None:
        cmd += f" --seed {seed}"
    return cmd


def write_json(path, data):
    """Write ``data`` as JSON to ``path`` atomically (``fnnet.io.write_json``)."""
    return io.write_json(path, data)


def run_one(name, out_root, quick, seed, machine):
    """Import ``experiments.NAME``, call its ``main``, write and return its ``run_info`` record.

    ``status`` is ``ok``, ``missing`` (no such module) or ``failed`` (it raised, or did not return
    a dict); ``error`` holds the reason.
    """
    out_dir = Path(out_root) / name
    argv = ["--out", str(out_dir)] + (["--quick"] if quick else [])
    argv += ["--seed", str(seed)] if seed is not None else []
    info = {"name": name, "quick": quick, "seed": seed, "started": now(), "argv": argv,
            "command": command_for(name, out_dir, quick, seed), "machine": machine}
    print(f"[run_all] {name}: {info['command']}", flush=True)
    t = time.perf_counter()
    try:
        module = importlib.import_module(f"experiments.{name}")
    except Exception as e:  # absent, or an error while importing it: report it, run the others
        if isinstance(e, ModuleNotFoundError) and e.name == f"experiments.{name}":
            info.update(status="missing", error=f"no module experiments/{name}.py")
        else:
            traceback.print_exc()
            info.update(status="failed", error=f"import failed: {type(e).__name__}: {e}")
    else:
        try:
            result = module.main(argv)
            if isinstance(result, dict):
                info.update(status="ok", error=None)
            else:
                info.update(status="failed",
                            error=f"main() returned {type(result).__name__}, expected a dict")
        except (Exception, SystemExit) as e:
            traceback.print_exc()
            info.update(status="failed", error=f"{type(e).__name__}: {e}")
    info["seconds"] = time.perf_counter() - t
    info["finished"] = now()
    write_json(out_dir / "run_info.json", info)
    print(f"[run_all] {name}: {info['status']} in {info['seconds']:.1f}s"
          + (f" ({info['error']})" if info["error"] else ""), flush=True)
    return info


# ---------------------------------------------------------------------------------------------
# The README


def read_json(path):
    """The JSON data in ``path``, or ``None`` when it is absent or unreadable."""
    try:
        return io.read_json(path)
    except (OSError, ValueError):
        return None


def fmt(key, value):
    """A metric value as table text: accuracies in [0, 1] as percentages, other floats with 4
    significant digits, short lists joined."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if "accuracy" in key.lower() and 0.0 <= value <= 1.0:
            return f"{value:.2%}"
        return f"{value:.4g}"
    if value is None:
        return "n/a"
    if isinstance(value, list):
        return ", ".join(fmt(key, v) for v in value)
    return str(value)


def _scalar(value):
    if isinstance(value, (bool, int, float)) or value is None:
        return True
    if isinstance(value, str):
        return len(value) <= 80
    if isinstance(value, list):
        return 0 < len(value) <= 8 and all(isinstance(v, (bool, int, float, str)) for v in value)
    return False


def headline(metrics):
    """``(label, value)`` rows for the README: the ``"headline"`` dict when present, else the
    scalar entries of ``metrics`` and of its dicts one level down (``outer.inner``)."""
    if isinstance(metrics.get("headline"), dict):
        rows = [(str(k), v) for k, v in metrics["headline"].items()]
    else:
        rows = []
        for k, v in metrics.items():
            if isinstance(v, dict):
                rows += [(f"{k}.{k2}", v2) for k2, v2 in v.items() if _scalar(v2)]
            elif _scalar(v):
                rows.append((str(k), v))
    return rows[:MAX_ROWS]


def extra_tables(metrics):
    """Markdown lines for the optional ``"tables"`` entry of ``metrics``: ``{title: {"headers":
    [...], "rows": [[...], ...]}}``, each drawn as a table under its title."""
    lines = []
    tables = metrics.get("tables")
    if not isinstance(tables, dict):
        return lines
    for title, t in tables.items():
        headers, rows = t.get("headers") or [], t.get("rows") or []
        if not headers:
            continue
        lines += [f"**{title}**", "", "| " + " | ".join(_cell(h) for h in headers) + " |",
                  "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(_cell(fmt(str(h), v)) for h, v in zip(headers, row)) + " |"
                  for row in rows]
        lines.append("")
    return lines


def ordered(figures, preferred):
    """``figures`` (paths) with the file names listed in ``preferred`` first, in that order."""
    rank = {n: i for i, n in enumerate(preferred or []) if isinstance(n, str)}
    return sorted(figures, key=lambda f: (rank.get(f.name, len(rank)), f.name))


def module_doc(name):
    """The experiment module's docstring, or ``None`` when it cannot be imported."""
    try:
        return importlib.import_module(f"experiments.{name}").__doc__
    except Exception:
        return None


def copy_figures(src_dir, dest_dir, since=None):
    """Copy the PNGs of ``src_dir`` (those written at or after the time ``since``, when given)
    into a fresh ``dest_dir``, scaled to at most ``MAX_WIDTH`` pixels wide; return the new paths,
    sorted."""
    from PIL import Image

    if dest_dir.exists():
        shutil.rmtree(dest_dir)
    dest_dir.mkdir(parents=True)
    copied = []
    for src in sorted(Path(src_dir).glob("*.png")):
        if since is not None and src.stat().st_mtime < since - 1:
            continue  # left over from an earlier run
        dest = dest_dir / src.name
        with Image.open(src) as img:
            if img.width > MAX_WIDTH:
                img = img.resize((MAX_WIDTH, round(img.height * MAX_WIDTH / img.width)),
                                 Image.LANCZOS)
            io.atomic_write(dest, lambda f, img=img: img.save(f, format="PNG", optimize=True))
        copied.append(dest)
    return copied


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def _rel(path, start):
    return Path(os.path.relpath(path, start)).as_posix()


def _timestamp(info):
    """``info["started"]`` as seconds since the epoch, or ``None``."""
    try:
        return _dt.datetime.fromisoformat(info["started"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


def _first_paragraph(doc):
    para = []
    for line in doc.strip().splitlines():
        if not line.strip():
            break
        para.append(line.strip())
    return " ".join(para)


def experiment_state(name, out_root):
    """What the README says about one experiment: its ``run_info`` (or one inferred from a
    ``metrics.json`` written by running the script directly) and its metrics."""
    folder = Path(out_root) / name
    info = read_json(folder / "run_info.json")
    metrics = read_json(folder / "metrics.json")
    if info is None and metrics is not None:
        stamp = _dt.datetime.fromtimestamp((folder / "metrics.json").stat().st_mtime).astimezone()
        info = {"status": "ok", "quick": bool(metrics.get("quick", False)), "error": None,
                "finished": stamp.replace(microsecond=0).isoformat(), "seconds": None,
                "command": command_for(name, folder, bool(metrics.get("quick", False)), None),
                "machine": None, "note": "run directly, not through run_all"}
    if info is not None and info.get("status") != "ok":
        metrics = None  # a failed run's leftovers are not its results
    return info, metrics


def _mode_text(states):
    """Whether the results shown come from full runs, ``--quick`` runs or both."""
    modes = {("quick" if info.get("quick") else "full") for info, _ in states.values()
             if info and info.get("status") == "ok"}
    return {frozenset({"full"}): "full runs (no `--quick`)",
            frozenset({"quick"}): "`--quick` runs (tiny sizes) only",
            frozenset({"full", "quick"}): "a mix: some full runs, some `--quick` runs "
                                          "(tiny sizes); each section says which",
            frozenset(): "nothing has run yet"}[frozenset(modes)]


def summary_lines(states, out_root, invocation, machine):
    """The page's title, introduction and one-row-per-experiment status table."""
    lines = [
        "# fnnet experiments",
        "",
        "One runnable script per derivation in the lecture notes (read in `experiments/NOTES.md`): "
        "each trains or checks what its note derives with fnnet, writes its figures and a "
        "`metrics.json`, and prints a summary table. Run one from the repository root with "
        "`python -m experiments.NAME [--quick] [--out DIR] [--seed S]`, or all of them with "
        "`python -m experiments.run_all [--quick] [--out runs/] [--only NAMES]`, which rebuilds "
        "this page.",
        "",
        f"This page was generated by `{invocation}` on {now()}. Every number on it is read from "
        f"the `metrics.json` files under `{out_root}`; the figures are copies of the PNGs there. "
        f"Results shown: {_mode_text(states)}. Timings depend on what else the machine was running.",
        "",
        f"Machine: {describe_machine(machine)}.",
        "",
        "| experiment | status | mode | finished | seconds |",
        "|---|---|---|---|---|",
    ]
    for name, (info, _) in states.items():
        if info is None:
            lines.append(f"| [{name}](#{name}) | not run | | | |")
            continue
        secs = info.get("seconds")
        lines.append(f"| [{name}](#{name}) | {info.get('status')} | "
                     f"{'quick' if info.get('quick') else 'full'} | {info.get('finished', '')} | "
                     f"{'' if secs is None else f'{secs:.1f}'} |")
    return lines + [""]


def _run_details(info, machine):
    """The line that says how, when and where an experiment ran."""
    run = "`--quick` run (tiny sizes, not the real experiment)" if info.get("quick") else "full run"
    details = f"Status: **{info.get('status')}**, {run}, finished {info.get('finished')}"
    if info.get("seconds") is not None:
        details += f", {info['seconds']:.1f} s"
    if info.get("note"):
        details += f" ({info['note']})"
    if info.get("machine") and info["machine"] != machine:
        details += f"; machine: {describe_machine(info['machine'])}"
    return details + "."


def section_lines(name, info, metrics, out_root, readme, machine):
    """One experiment's section: its docstring, command, status, headline table and figures (copied
    beside the README; a stale copy is removed when there are no results)."""
    figures_root = readme.parent / "figures"
    lines = [f"## {name}", ""]
    doc = module_doc(name)
    if doc:
        lines += [_first_paragraph(doc), "",
                  "<details><summary>Note, equations and method (the module docstring)"
                  "</summary>", "", "```text", doc.strip(), "```", "", "</details>", ""]
    else:
        lines += [f"`experiments/{name}.py` could not be imported.", ""]
    if info is None or info.get("status") != "ok" or metrics is None:
        shutil.rmtree(figures_root / name, ignore_errors=True)  # no stale figures
    if info is None:
        return lines + ["Not run yet.", ""]
    lines += [f"Command: `{info.get('command')}`", "", _run_details(info, machine), ""]
    if info.get("status") != "ok":
        return lines + [f"Error: `{_cell(info.get('error'))}`", ""]
    if metrics is None:
        return lines + ["No `metrics.json` was written.", ""]
    rows = headline(metrics)
    if rows:
        lines += ["| measured | value |", "|---|---|"]
        lines += [f"| {_cell(k)} | {_cell(fmt(k, v))} |" for k, v in rows]
        lines.append("")
    lines += extra_tables(metrics)
    figures = copy_figures(Path(out_root) / name, figures_root / name, _timestamp(info))
    for fig in ordered(figures, metrics.get("figures")):
        lines += [f"![{name}: {fig.stem}]({_rel(fig, readme.parent)})", ""]
    return lines


def build_readme(out_root, readme, invocation, machine):
    """Write the README at ``readme`` from the runs under ``out_root``; return its path."""
    readme = Path(readme)
    states = {name: experiment_state(name, out_root) for name in EXPERIMENTS}
    lines = summary_lines(states, out_root, invocation, machine)
    for name, (info, metrics) in states.items():
        lines += section_lines(name, info, metrics, out_root, readme, machine)
    return io.write_text(readme, "\n".join(lines).rstrip() + "\n")


def main(argv=None):
    """Run the selected experiments, rebuild the README; return ``{"runs", "readme",
    "exit_status"}`` (``exit_status`` 1 when an experiment was missing or failed)."""
    p = argparse.ArgumentParser(prog="python -m experiments.run_all", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=folder, default=Path("runs"),
                   help="root folder; experiment NAME writes into OUT/NAME (default: runs)")
    p.add_argument("--quick", action="store_true", help="pass --quick to every experiment")
    p.add_argument("--only", nargs="+", default=None, metavar="NAMES",
                   help=f"run only these (comma- or space-separated) of: {', '.join(EXPERIMENTS)}")
    p.add_argument("--readme", type=Path, default=None,
                   help="where to write the results page (default: OUT/README.md, figures in "
                        "OUT/figures); nothing outside --out is written unless --publish is given")
    p.add_argument("--publish", action="store_true",
                   help="regenerate the committed results page, experiments/README.md, and its "
                        "figures in experiments/figures (what the repository shows)")
    p.add_argument("--seed", type=int, default=None, help="pass --seed to every experiment")
    args = p.parse_args(argv)
    if args.publish and args.readme is not None:
        p.error("--publish writes experiments/README.md; give either --publish or --readme")
    if args.out.exists() and not args.out.is_dir():
        p.error(f"argument --out: expected a folder (created if missing), got {str(args.out)!r}, "
                f"a file")
    readme_path = DEFAULT_README if args.publish else args.readme or args.out / "README.md"
    if readme_path.resolve() == PROJECT_README:
        p.error(f"the results page would replace the project's {PROJECT_README}; choose "
                f"another --out or --readme")
    try:
        names = parse_names(args.only) if args.only else list(EXPERIMENTS)
    except ValueError as e:
        p.error(str(e))

    machine = machine_info()
    runs = {name: run_one(name, args.out, args.quick, args.seed, machine) for name in names}
    invocation = " ".join(["python -m experiments.run_all"] + (["--quick"] if args.quick else [])
                          + (["--publish"] if args.publish else [])
                          + ["--out", str(args.out)]
                          + (["--only", ",".join(names)] if args.only else [])
                          + (["--seed", str(args.seed)] if args.seed is not None else []))
    readme = build_readme(args.out, readme_path, invocation, machine)
    bad = {n: r for n, r in runs.items() if r["status"] != "ok"}
    rows = [[n, r["status"], f"{r['seconds']:.1f}", r["error"] or ""] for n, r in runs.items()]
    print(common.table(rows, ["experiment", "status", "seconds", "error"]))
    print(f"README written to {readme}")
    if bad:
        print(f"{len(bad)} experiment(s) missing or failed: {', '.join(bad)}", file=sys.stderr)
    return {"runs": runs, "readme": str(readme), "exit_status": 1 if bad else 0}


if __name__ == "__main__":
    sys.exit(main()["exit_status"])
