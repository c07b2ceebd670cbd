"""The process's limit of open files, raised to what the system allows.

Every HTTP and DICOM connection is a file descriptor, and the usual soft limit (1024) is far
below the connection budgets: at the limit, accept() fails and even `/health` goes
unanswered. The hard limit is what an unprivileged process may raise itself to.
"""

from __future__ import annotations

import resource


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Linux refuses an infinite soft limit above fs.nr_open (2^20 by default).
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft  # the caller says what it is
    return target
