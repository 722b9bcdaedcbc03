"""One BLAS thread for small matrices: the only place bidsapp limits BLAS threads.

A module of its own (threadpoolctl only) so that the group level, which computes
correlations but never extracts, does not import the extraction machinery for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from threadpoolctl import threadpool_limits

__all__ = ["one_blas_thread"]


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run BLAS/LAPACK single-threaded (region signals are small matrices).

    On a busy machine a multi-threaded BLAS is much slower on ``(n_volumes x n_regions)``
    matrices than one thread (pivoted QR of 300 x 37: ~130 ms against 0.2 ms measured on
    two shared cores). One thread also makes the bytes of a result independent of how many
    threads the process has.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        yield
