"""pyarrow without its pandas probe, for processes that build Arrow arrays from Python values only."""

from __future__ import annotations

import contextlib
import sys
import types
from typing import NoReturn

__all__ = ["skip_pandas_probe"]


class _Absent(types.ModuleType):
    """Stands in for pandas while pyarrow probes for it: any use says it is not installed."""

    def __getattr__(self, name: str) -> NoReturn:
        msg = "pandas is not used here"
        raise ImportError(msg)


def skip_pandas_probe() -> None:
    """Let pyarrow conclude, once, that pandas is absent, unless this process imported pandas already.

    pyarrow's first ``pa.array`` call imports pandas (about 0.8 s of CPU and 60 MB per process)
    only to ask whether its argument is a pandas object. Step actors and sinks, which write the
    event log and the Parquet parts from Python lists, never pass one. pyarrow keeps the answer
    for its probes; an explicit pandas call (``table.to_pandas()``) still imports pandas.
    """
    if "pandas" in sys.modules:
        return
    import pyarrow as pa

    sys.modules["pandas"] = _Absent("pandas")
    try:
        with contextlib.suppress(ImportError):
            pa.array([0], pa.int8())
    finally:
        del sys.modules["pandas"]
