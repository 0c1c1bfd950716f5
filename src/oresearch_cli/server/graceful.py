"""Run a uvicorn-based server's console script with a bounded graceful shutdown.

    python -m oresearch_cli.server.graceful --shutdown-timeout 2 /path/to/transformers serve MODEL ...

`transformers serve` builds its own `uvicorn.Config` and leaves `timeout_graceful_shutdown` unset,
so on SIGTERM uvicorn waits for every open connection to finish: one streaming generation with a
large `max_tokens` holds the server for minutes, and `ores serve` could only SIGKILL it. Here every
`uvicorn.Config` made in this process gets the timeout: on SIGTERM (or SIGINT) the server stops
accepting, gives requests in flight `--shutdown-timeout` seconds, then cancels them (which cancels
their generations), runs the app's shutdown and ends the process. Threads the server leaves behind
(the continuous-batching loop is not a daemon) do not keep the process alive: it ends with
`os._exit` (or with the signal uvicorn re-raises).

Only the timeout changes; the script, its arguments and its output are the server's own.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import shutil
import sys
import traceback

USAGE = "usage: python -m oresearch_cli.server.graceful [--shutdown-timeout SECONDS] SCRIPT [ARGS...]"


def bound_uvicorn_shutdown(timeout: float) -> None:
    """Make `uvicorn.Config` (also as `uvicorn.run` sees it) default `timeout_graceful_shutdown` to `timeout`."""
    import uvicorn
    import uvicorn.main

    original = uvicorn.Config
    if getattr(original, "_ores_bounded_shutdown", None) is not None:
        return

    class BoundedConfig(original):  # type: ignore[misc, valid-type]
        _ores_bounded_shutdown = timeout

        def __init__(self, *args, **kwargs) -> None:
            if kwargs.get("timeout_graceful_shutdown") is None:
                kwargs["timeout_graceful_shutdown"] = timeout
            super().__init__(*args, **kwargs)

    uvicorn.Config = BoundedConfig  # type: ignore[misc]
    if getattr(uvicorn.main, "Config", None) is original:
        uvicorn.main.Config = BoundedConfig  # type: ignore[attr-defined]


def _parse(argv: list[str]) -> tuple[float, str, list[str]]:
    timeout = 2.0
    args = list(argv)
    while args and args[0].startswith("--shutdown-timeout"):
        flag = args.pop(0)
        value = flag.split("=", 1)[1] if "=" in flag else (args.pop(0) if args else "")
        try:
            timeout = float(value)
        except ValueError:
            raise SystemExit(
                f"{USAGE}\n--shutdown-timeout needs a number of seconds, not {value!r}"
            ) from None
    if not args:
        raise SystemExit(USAGE)
    return timeout, args[0], args[1:]


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    timeout, script, rest = _parse(sys.argv[1:] if argv is None else argv)
    path = script if os.sep in script else (shutil.which(script) or script)
    if not os.path.isfile(path):
        print(f"cannot run {script!r}: no such script; is it installed?", file=sys.stderr)
        return 127
    with contextlib.suppress(ImportError):  # not a uvicorn server after all: run it as it is
        bound_uvicorn_shutdown(timeout)
    sys.argv = [path, *rest]
    try:
        runpy.run_path(path, run_name="__main__")
        return 0
    except SystemExit as exc:
        return _exit_code(exc)
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it shut down for
        return 130
    except BaseException:
        traceback.print_exc()
        return 1


if __name__ == "__main__":  # pragma: no cover - exercised through `ores serve`
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # a generation thread the server left running must not hold the exit
