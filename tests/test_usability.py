"""What a new user meets first: a help that answers at once, progress that reads well in a log."""
import io
import os
import subprocess
import sys

from diffkit.cli import main
from diffkit.progress import progress_bar


def test_the_help_path_imports_no_torch():
    probe = ("import sys\nfrom diffkit.cli import main\n"
             "for argv in (['--help'], ['train', '--help'], ['--version']):\n"
             "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
             "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_diffkit_state_is_still_reachable_from_the_package():
    import diffkit
    from diffkit.state import State

    assert diffkit.State is State


def test_the_cli_asks_openmp_to_wait_passively_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert main(["--version"]) == 0
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert main(["--version"]) == 0
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_progress_in_a_log_is_whole_lines_without_carriage_returns(monkeypatch):
    monkeypatch.setenv("DIFFKIT_PROGRESS_SECONDS", "0")
    log = io.StringIO()  # not a terminal
    bar = progress_bar(5, "train demo", stream=log)
    for _ in range(5):
        bar.update(1)
    bar.close()
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) >= 5 and all(line.startswith("train demo:") for line in lines)
    assert "5/5" in lines[-1]


def test_progress_in_a_log_is_rate_limited(monkeypatch):
    monkeypatch.setenv("DIFFKIT_PROGRESS_SECONDS", "3600")
    log = io.StringIO()
    bar = progress_bar(10_000, "sampling", stream=log)
    for _ in range(10_000):
        bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines()
    assert len(lines) <= 3, lines  # the start, (at most one more,) and the final count
    assert "10000/10000" in lines[-1]


def test_a_bad_progress_interval_is_one_clear_error(monkeypatch):
    import pytest

    monkeypatch.setenv("DIFFKIT_PROGRESS_SECONDS", "often")
    with pytest.raises(ValueError, match="DIFFKIT_PROGRESS_SECONDS must be a number"):
        progress_bar(3, "x", stream=io.StringIO())
