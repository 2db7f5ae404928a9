"""Retry policies for steps."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often, and after which delay, a failing step is tried again.

    A step's own timeout counts as a failed attempt. The delay before attempt
    ``k + 1`` is ``min(backoff * backoff_factor ** (k - 1), max_backoff)``.

    Args:
        max_attempts: attempts in total, the first included (``3`` = two retries).
        backoff: delay in seconds before the first retry.
        backoff_factor: multiplier of the delay for each further retry.
        max_backoff: upper bound of any delay.
        retry_on: exception types that are retried; others fail at once.

    Example::

        @step(retry_policy=RetryPolicy(max_attempts=3, backoff=0.5))
        async def fetch(self, ev: Query) -> Answer: ...
    """

    max_attempts: int = 3
    backoff: float = 0.0
    backoff_factor: float = 2.0
    max_backoff: float = 60.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy(max_attempts={self.max_attempts}): must be at least 1")
        if self.backoff < 0 or self.backoff_factor < 1 or self.max_backoff < 0:
            raise ValueError(
                f"RetryPolicy(backoff={self.backoff}, backoff_factor={self.backoff_factor}, "
                f"max_backoff={self.max_backoff}): delays must be >= 0 and the factor >= 1"
            )

    def next_delay(self, attempt: int, error: BaseException) -> float | None:
        """Delay before the next attempt after failed attempt ``attempt`` (1-based), or None."""
        if attempt >= self.max_attempts or not isinstance(error, self.retry_on):
            return None
        return min(self.backoff * self.backoff_factor ** (attempt - 1), self.max_backoff)
