"""The registration limiter: a window per client, counted from the oldest attempt in it."""

from __future__ import annotations

import time

from godwit.service.ratelimit import RateLimiter


def test_a_window_per_client_that_slides() -> None:
    limit = RateLimiter(2, 0.3)
    assert [limit.retry_after("a"), limit.retry_after("a")] == [0.0, 0.0]
    wait = limit.retry_after("a")
    assert 0 < wait <= 0.3
    assert limit.retry_after("b") == 0.0  # another address has its own window
    time.sleep(wait + 0.01)
    assert limit.retry_after("a") == 0.0
