"""The `lgm` command: argument errors are clear, `info` runs, `bench` writes its tables."""

import subprocess
import sys

import pytest

from lgm import cli


def test_bad_arguments_exit_with_a_message(capsys):
    for argv in (["bench", "--threads", "x"], ["bench", "--threads", "0"], ["bench", "--dtypes", "float16"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 2
        assert "expected" in capsys.readouterr().err


def test_info_runs(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "numba" in out and "CPU vectors" in out and "GPU" in out


def test_bench_table_written_atomically(tmp_path, monkeypatch):
    """A minimal benchmark run (one small case) through the real code path."""
    from lgm import bench

    monkeypatch.setenv("LGM_BENCH_NO_TORCH", "1")
    monkeypatch.setattr(bench, "cases", lambda quick=False: [("diag_gaussian_logpdf", (64, 32))])
    out = tmp_path / "t.md"
    assert cli.main(["bench", "--quick", "--threads", "1", "--dtypes", "float64", "--out", str(out)]) == 0
    text = out.read_text()
    assert "#### diag_gaussian_logpdf" in text and "| 64x32 | float64 | 1 |" in text
    assert not list(tmp_path.glob(".tmp-*"))  # no temporary file left behind


def test_console_script_entry_point():
    r = subprocess.run([sys.executable, "-m", "lgm.cli", "info"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "CPU vectors" in r.stdout
