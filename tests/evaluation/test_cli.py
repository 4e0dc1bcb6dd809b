"""``cellformer evaluate`` / ``cellformer compare`` on the command line: results and one-line errors."""

from __future__ import annotations

from cellformer.cli import main


def test_evaluate_not_a_run_directory(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no config.json" in err and "\n" not in err


def test_compare_existing_output_needs_overwrite(tmp_path, runs, capsys):
    out = tmp_path / "report"
    out.mkdir()
    assert main(["compare", str(runs[1].run_dir), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (
        main(["-q", "compare", str(runs[1].run_dir), str(runs[2].run_dir), "--out", str(out), "--overwrite"])
        == 0
    )
    assert capsys.readouterr().out.strip() == str(out / "report.html")
    assert (out / "report.md").exists()
