"""Quiet start-up for the command line (`python -m rae_keras.train|export|evaluate`, and
the scripts in tools/): TensorFlow's own logging stays out of the user's output unless
absl's `--verbosity` asks for INFO (0) or more.

TensorFlow reads TF_CPP_MIN_LOG_LEVEL once, before its first C++ log line, and some of
its start-up lines (the CUDA probe) are written before its logging is initialized at
all, whatever the level. So this has to happen before `import tensorflow`: the package's
`__init__` calls `quiet_startup_if_command_line()` first thing, which (for a command
only, never for `import rae_keras` in a notebook or a program) sets the level and
imports TensorFlow with the C-level stderr captured, replaying it if the import fails.

Standard library only: it runs before anything else of the package is imported.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from typing import Iterator, Optional, Sequence

_PACKAGE = __name__.rsplit(".", 1)[0]
_TOOLS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")
_VERBOSITY = re.compile(r"^--?(?:verbosity|v)(?:=(.*))?$")


def command_line_verbosity(argv: Sequence[str]) -> Optional[int]:
    """absl's --verbosity / -v as given on the command line (not in a flagfile), or None."""
    value = None
    args = list(argv[1:])
    for i, arg in enumerate(args):
        if arg == "--":
            break
        match = _VERBOSITY.match(arg)
        if match:
            text = match.group(1)
            if text is None:
                text = args[i + 1] if i + 1 < len(args) else ""
            try:
                value = int(text)
            except ValueError:
                value = {"debug": 1, "info": 0, "warning": -1, "error": -2,
                         "fatal": -3}.get(text.lower(), value)
    return value


def wants_tensorflow_logs(argv: Sequence[str]) -> bool:
    """--verbosity=0 (INFO) or more shows TensorFlow's own logs too."""
    verbosity = command_line_verbosity(argv)
    return verbosity is not None and verbosity >= 0


def is_command_line() -> bool:
    """True when this process is one of the project's commands: `python -m rae_keras.X`
    (while runpy imports the package, argv[0] is still "-m") or a script in tools/."""
    orig = list(getattr(sys, "orig_argv", []))
    if "-m" in orig:
        i = orig.index("-m")
        if i + 1 < len(orig) and orig[i + 1].startswith(_PACKAGE + "."):
            return True
    main = sys.argv[0] if sys.argv else ""
    return bool(main) and main != "-m" and (
        os.path.dirname(os.path.abspath(main)) == _TOOLS_DIR)


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[None]:
    """Everything written to file descriptor 2 (C++ logging included) inside the block
    is held back; it is written out only if the block raises."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            _restore(saved)
            held.seek(0)
            os.write(2, held.read())
            raise
        else:
            _restore(saved)


def _restore(saved: int) -> None:
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.dup2(saved, 2)
    os.close(saved)


def quiet_startup(argv: Optional[Sequence[str]] = None) -> None:
    """TensorFlow's C++ logs down to fatal errors (unless TF_CPP_MIN_LOG_LEVEL is set),
    and its import with the start-up lines held back. Nothing when --verbosity >= 0 or
    TensorFlow is already imported (too late to matter)."""
    if wants_tensorflow_logs(sys.argv if argv is None else argv):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return
    with native_stderr_captured():
        import tensorflow  # noqa: F401  (imported here, its start-up held back)


def quiet_startup_if_command_line() -> None:
    if is_command_line():
        quiet_startup()
