"""sparseblob.verify: constraint and differential checks, reports and the command line.

:func:`verify_package` checks a compressed package and returns a :class:`Report`;
:func:`render_table`, :func:`to_json` and :func:`write_junit` present it.
"""

from .report import Report, render_table, to_json, write_junit
from .verify import verify_package

__all__ = ["verify_package", "Report", "render_table", "to_json", "write_junit"]
