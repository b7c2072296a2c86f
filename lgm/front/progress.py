"""Progress bars for the front (tqdm when installed; a silent stand-in otherwise). The numerics
never draw progress: they take callbacks, and the front turns those into bars."""

from __future__ import annotations

import sys

__all__ = ["progress_bar"]


def progress_bar(iterable=None, **kw):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress bars are optional
        return iterable if iterable is not None else NoBar()
    return tqdm(iterable, file=sys.stderr, dynamic_ncols=True, **kw)


class NoBar:
    def update(self, n=1):
        pass

    def set_postfix_str(self, s):
        pass

    def close(self):
        pass
