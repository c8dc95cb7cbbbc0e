"""``python -m experiments.run_all``'s flags: what it cannot honour is one line and exit 2 before
any experiment runs or anything is written (issue 20: ``--out FILE`` was a traceback, ``--only ""``
ran nothing and rebuilt the page, and ``--out ""`` ran every experiment into the current folder
and replaced the project's README.md)."""

import pytest

from experiments import run_all


@pytest.mark.parametrize("argv, message", [
    (["--only", ""], "--only needs at least one name"),
    (["--out", ""], "argument --out: expected a folder, got an empty value"),
    (["--out", "FILE"], "argument --out: expected a folder (created if missing), got"),
    (["--out", "."], "would replace the project's"),
    (["--readme", "README.md"], "would replace the project's"),
])
def test_refused_in_one_line_before_anything_runs(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(run_all.PROJECT_README.parent)
    if "FILE" in argv:
        argv = ["--out", str(tmp_path / "file")]
        (tmp_path / "file").write_text("x")
    ran = []
    monkeypatch.setattr(run_all, "run_one", lambda *args: ran.append(args))
    with pytest.raises(SystemExit) as exit_info:
        run_all.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and message in err[-1] and not ran
