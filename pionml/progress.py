"""Progress bars: one place that decides how pionml's long loops report progress.

A bar is shown when ``progress`` is true and the output is a terminal; logs redirected to a file
get no carriage-return spam (tqdm's ``disable=None``). Every command's ``--no-progress`` flag
turns them off entirely.
"""

from __future__ import annotations


def progress_bar(iterable=None, *, progress: bool = True, **kwargs):
    """A tqdm bar over ``iterable`` (or a manual one with ``total=``), shown on terminals only."""
    from tqdm import tqdm

    return tqdm(iterable, disable=None if progress else True, **kwargs)
