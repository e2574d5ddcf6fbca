"""One run per output folder: a second run stops with one line naming the live holder, and the folder of a run
that was killed is taken over (lit_xai/run_lock.py)."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lit_xai.cli import main, user_errors_exit
from lit_xai.owners import host_name
from lit_xai.run_lock import OutputFolderInUse, hold_output_folders, lock_path

ROOT = Path(__file__).resolve().parents[1]

# A child process that holds a folder, as a training run does, until it is killed.
HOLDER = textwrap.dedent(
    """
    import sys, time
    from lit_xai.run_lock import hold_output_folders
    with hold_output_folders([sys.argv[1]]):
        print("held", flush=True)
        time.sleep(120)
    """
)


@pytest.fixture()
def holder(tmp_path):
    """Start a process holding ``tmp_path / "outputs/digits/classifier"``; yields (process, folder)."""
    folder = tmp_path / "outputs/digits/classifier"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout.readline().strip() == "held"
        yield child, folder
    finally:
        child.kill()
        child.wait(timeout=60)


def test_a_live_holder_is_named_and_the_folder_of_a_killed_one_is_taken_over(holder):
    child, folder = holder
    named = (
        rf"output folder {re.escape(str(folder))} is in use by another run: pid {child.pid} on {host_name()}"
    )
    elsewhere = folder.parent / "surrogate"
    # One shared folder is enough to collide (the path is resolved first), and nothing stays held after the refusal.
    with (
        pytest.raises(OutputFolderInUse, match=named),
        hold_output_folders([elsewhere, folder / "../classifier"]),
    ):
        pytest.fail("two runs held the same folder")
    with hold_output_folders([elsewhere]):
        pass

    child.send_signal(signal.SIGKILL)  # no clean-up code runs: the kernel drops the lock
    child.wait(timeout=60)
    with hold_output_folders([folder]) as held:
        assert held == [folder.resolve()]
        assert json.loads(lock_path(folder).read_text())["pid"] == os.getpid()
    assert not folder.exists()  # the lock lives next to the folder, which keeps only the run's outputs


def test_train_py_refuses_a_folder_in_use_with_one_line_and_writes_nothing(holder, tmp_path, monkeypatch):
    child, folder = holder
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LIT_XAI_TRACEBACK", "0")
    with pytest.raises(SystemExit) as stop, user_errors_exit():
        main(["fit", "--config", str(ROOT / "configs/digits/classifier.yaml"), "--trainer.max_steps=1"])
    line = str(stop.value.code)
    assert line.startswith(f"error: output folder {folder} is in use by another run: pid {child.pid} "), line
    assert "another folder (--trainer.default_root_dir and the checkpoint dirpath)" in line
    assert "\n" not in line


def test_the_refusal_names_the_folder_option_of_the_command_that_runs(holder):
    _, folder = holder  # e.g. the InputIBA command, whose folder is --output_dir
    with (
        pytest.raises(OutputFolderInUse, match=r"give this run another folder \(--output_dir\)$"),
        hold_output_folders([folder], options="--output_dir"),
    ):
        pytest.fail("two runs held the same folder")
    assert not folder.exists(), sorted(p.name for p in folder.rglob("*"))  # no checkpoint, config or W&B run


@pytest.mark.skipif(
    os.name == "nt" or os.geteuid() == 0, reason="needs POSIX permissions that bind this user"
)
def test_a_folder_whose_parent_is_read_only_is_locked_from_inside(tmp_path):
    parent = tmp_path / "scratch"
    folder = parent / "me"
    folder.mkdir(parents=True)
    parent.chmod(0o555)  # like /scratch: only the user's own folder is writable
    try:
        with hold_output_folders([folder]):
            assert (folder / ".lit_xai.lock").is_file()
            with (
                pytest.raises(OutputFolderInUse, match="in use by another run"),
                hold_output_folders([folder]),
            ):
                pass
    finally:
        parent.chmod(0o755)
