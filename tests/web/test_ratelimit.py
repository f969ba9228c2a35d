from meeting.ratelimit import KeyedLimiter, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_bucket_spends_and_refills() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2, burst=3, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.5
    assert bucket.take() and not bucket.take()
    clock.now += 100
    assert bucket.full


def test_keys_have_separate_budgets_and_idle_ones_are_forgotten() -> None:
    clock = Clock()
    limiter = KeyedLimiter(rate=1, burst=2, clock=clock, prune_every=10)
    assert limiter.take("a") and limiter.take("a") and not limiter.take("a")
    assert limiter.take("b")
    clock.now += 10
    for _ in range(7):
        limiter.take("c")
    assert len(limiter) == 1  # a and b were full again and pruned; c is busy
