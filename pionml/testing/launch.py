"""``train.py`` under ``torchrun`` on the CPU for the tests of distributed training: the
command, one launch, and what a failed launch printed that is worth reading.

A worker that dies of SIGABRT, SIGSEGV or SIGBUS died inside torch's C++: pionml's Python raises
none of them, while gloo's transport threads abort the process on a socket error they cannot
hand to Python. No test of pionml's behaviour is about that, so where a run that should
succeed crashes that way :func:`launch` launches it once more, as a user would: again with
``--resume`` for a resumed run (what resuming is for), afresh into an emptied folder for a new
one. A second crash, or any other failure, is the test's failure, and :func:`summary` shows
the workers' own lines, not only torchrun's report."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

#: The signals of a crash inside C++ code, as torchrun's failure report names them.
CRASH_SIGNALS = ("SIGABRT", "SIGSEGV", "SIGBUS")
_SIGNAL = re.compile(r"Signal \d+ \((SIG[A-Z]+)\) received by PID")
#: Lines of a worker's own failure: pionml's ERROR lines, C++ terminate texts, Python errors.
_WORTH = re.compile(r" ERROR |terminate called|what\(\):|Error:|Exception:|Aborted|Fatal")


def command(script, args, nproc: int = 2, launcher=()) -> list[str]:
    """``torchrun --standalone --nproc_per_node NPROC [LAUNCHER...] SCRIPT ARGS...`` with this
    Python (``launcher``: more torchrun options, e.g. ``--log-dir``)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            str(nproc), *launcher, str(script), *args]


def environment(root) -> dict:
    """This process's environment with ``root`` importable and one torch thread per worker."""
    return {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}


def crash_signal(stderr: str) -> str | None:
    """The signal a worker died of when it is one of :data:`CRASH_SIGNALS`, else None."""
    for name in _SIGNAL.findall(stderr):
        if name in CRASH_SIGNALS:
            return name
    return None


def summary(stderr: str, tail: int = 1500, most: int = 40) -> str:
    """What a failed launch printed that is worth reading: the workers' failure lines (at
    most ``most``), then the last ``tail`` characters (torchrun's report)."""
    lines = [ln for ln in stderr.splitlines()
             if _WORTH.search(ln) and "torch.distributed.elastic" not in ln][:most]
    return "\n".join([*lines, "...", stderr[-tail:]])


def launch(script, args, root, timeout: float = 300, nproc: int = 2,
           retry_crash: bool = True) -> subprocess.CompletedProcess:
    """One ``torchrun`` launch of ``script`` with ``args``; stdout and stderr captured. With
    ``retry_crash`` a launch whose worker crashed in C++ is launched once more (see the module
    text; the run folder is ``args``' ``--out``); the result's stderr then starts with the
    first launch's summary."""
    cmd = command(script, args, nproc)
    res = subprocess.run(cmd, cwd=root, env=environment(root), capture_output=True, text=True,
                         timeout=timeout)
    crash = crash_signal(res.stderr) if res.returncode != 0 else None
    if not (retry_crash and crash):
        return res
    first = summary(res.stderr)
    warnings.warn(f"a torchrun worker died of {crash} (inside torch, not pionml); launched once "
                  f"more:\n{first}", stacklevel=2)
    if "--resume" not in args and "--out" in args:
        out = Path(args[args.index("--out") + 1])
        if out.exists():
            shutil.rmtree(out)
    again = subprocess.run(cmd, cwd=root, env=environment(root), capture_output=True, text=True,
                           timeout=timeout)
    again.stderr = f"[first launch: a worker died of {crash}]\n{first}\n[second launch]\n" \
                   f"{again.stderr}"
    return again
