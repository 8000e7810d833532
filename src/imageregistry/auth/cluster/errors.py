"""The one failure of cluster mode that is not an answer: the cluster could not decide."""

from __future__ import annotations


class ClusterUnavailable(Exception):
    """The cluster was unreachable, too slow, refused the registry's own credentials or
    answered something that is not a review. Requests that needed the answer are refused
    with 503 (never allowed), and nothing is remembered from it."""

    retry_after = 5
