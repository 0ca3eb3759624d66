"""What many test modules share: running the real `wave` command (or any script) in a subprocess.

Subprocesses run on one thread each, so that two of them (or two ranks) share the 2 cores
fairly and a run's numbers do not depend on what else the machine is doing.
"""

from __future__ import annotations

import os
import subprocess
import sys

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_python(*args, cwd=None, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python ARGS...` in a subprocess: stdout and stderr captured as text, never raising on exit codes."""
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env=ENV if env is None else env, check=False)


def wave(*args, cwd=None, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real `wave` command with ARGS, in a subprocess."""
    return run_python("-m", "waveinit.cli", *args, cwd=cwd, timeout=timeout, env=env)


def start_wave(*args, cwd=None, env: dict | None = None, **popen) -> subprocess.Popen:
    """The real `wave` command started in the background (to be interrupted or killed)."""
    return subprocess.Popen([sys.executable, "-m", "waveinit.cli", *map(str, args)], cwd=cwd, env=ENV if env is None else env, **popen)


def add_tensor(path, name: str, array) -> None:
    """Rewrite the safetensors file at `path` with one more tensor `name`, its metadata and other
    tensors kept: a file of ours that another tool has added to."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(path), framework="np") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    save_file({**tensors, name: array}, str(path), metadata)


def option_defaults(command: str) -> dict:
    """`wave COMMAND`'s options as Click sees them: {"--flag": default}."""
    import typer

    from waveinit.cli.main import app

    params = typer.main.get_command(app).commands[command].params
    return {opt: p.default for p in params for opt in p.opts if opt.startswith("--")}
