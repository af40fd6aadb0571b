"""Write audit for the SLURM DDP test (on PYTHONPATH only there): when SPECTRUM_WRITE_AUDIT_LOG
is set, every Python process of the job appends one line per write under
SPECTRUM_WRITE_AUDIT_ROOT to `<log>/<pid>.tsv`: SLURM_PROCID, pid, event, mode, path. Events
(sys.addaudithook): `open` with a writing mode or flag, `os.rename` (os.replace too), `os.mkdir`,
`os.remove`, `shutil.rmtree`. Writes from non-Python code (W&B's Go service) are not seen."""

import os
import sys

_ROOT = os.environ.get("SPECTRUM_WRITE_AUDIT_ROOT")
_LOG = os.environ.get("SPECTRUM_WRITE_AUDIT_LOG")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _install(root: str, log_dir: str) -> None:
    out = open(os.path.join(log_dir, f"{os.getpid()}.tsv"), "a", buffering=1)  # noqa: SIM115

    def under(path: object) -> str | None:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, (str, os.PathLike)):
            return None  # a file descriptor
        path = os.path.abspath(os.fspath(path))
        return path if path.startswith(root + os.sep) else None

    def hook(event: str, args: tuple) -> None:
        paths, mode = [], ""
        if event == "open":
            mode = str(args[1] or "")
            flags = args[2] if isinstance(args[2], int) else 0
            if any(c in mode for c in "wax+") or flags & _WRITE_FLAGS:
                paths = [args[0]]
        elif event == "os.rename":
            paths = [args[1]]
        elif event in ("os.mkdir", "os.remove", "shutil.rmtree"):
            paths = [args[0]]
        for path in paths:
            found = under(path)
            if found is not None:
                out.write(f"{os.environ.get('SLURM_PROCID', '-')}\t{os.getpid()}\t{event}\t"
                          f"{mode}\t{found}\n")

    sys.addaudithook(hook)


if _ROOT and _LOG:
    _install(os.path.abspath(_ROOT), _LOG)
