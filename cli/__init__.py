"""The `wave` command line.

`main` is the console script's entry point. It imports the command line only when called, so
that an install without the `cli` extra (`pip install waveinit`: the core alone) ends in one line
naming the missing extra instead of a traceback.
"""


def main() -> None:
    try:
        from .main import main as run
    except ModuleNotFoundError as e:
        import sys

        if (e.name or "").split(".")[0] not in ("typer", "click", "rich"):
            raise
        print(f"error: the wave command needs {e.name}, which is not installed: pip install 'waveinit[cli]'", file=sys.stderr)
        sys.exit(2)
    run()
