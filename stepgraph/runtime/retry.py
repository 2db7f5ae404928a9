"""Retry policies for steps."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import WorkflowValidationError

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

    Raises:
        WorkflowValidationError: a value that is not a (finite) number in range.

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
        attempts = self.max_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise WorkflowValidationError(
                f"RetryPolicy(max_attempts={attempts!r}): must be a whole number >= 1"
            )
        for name, least in (("backoff", 0.0), ("backoff_factor", 1.0), ("max_backoff", 0.0)):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < least
            ):
                raise WorkflowValidationError(
                    f"RetryPolicy({name}={value!r}): must be a finite number >= {least:g}"
                )
        retry_on = self.retry_on
        if not isinstance(retry_on, tuple) or not all(
            isinstance(kind, type) and issubclass(kind, BaseException) for kind in retry_on
        ):
            raise WorkflowValidationError(
                f"RetryPolicy(retry_on={retry_on!r}): must be a tuple of exception classes"
            )

    def next_delay(self, attempt: int, error: BaseException) -> float | None:
        """Delay before the next attempt after failed attempt ``attempt`` (1-based), or None."""
        if attempt >= self.max_attempts or not isinstance(error, self.retry_on):
            return None
        return min(self.backoff * self.backoff_factor ** (attempt - 1), self.max_backoff)
