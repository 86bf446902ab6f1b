"""How far a run has got, and what that sets: the learning rate, the stop, the time left.

Progress in [0, 1] drives the learning rate (lr_at) and the KL weight (losses.beta_at); a run ends
at its --epochs or its --max-time, whichever comes first, or when Ctrl-C asks (StopRequest).
"""
from __future__ import annotations

import math
import signal
import sys
from dataclasses import dataclass


def lr_at(progress: float, base: float, warmup: float = 0.02) -> float:
    """Linear warm-up, then cosine decay to a tenth of the base rate."""
    if progress < warmup:
        return base * progress / warmup
    t = min(1.0, (progress - warmup) / (1 - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


@dataclass(frozen=True)
class Schedule:
    """Training progress in [0, 1], which drives the learning rate and the KL weight: the further of
    the steps done of total_steps and the seconds of max_time. `anchor` is (step, elapsed, progress)
    where these limits took over: a resume that changes --epochs or --max-time continues from the
    progress already reached and spreads what is left over the new limits, instead of moving the
    run to another point of its schedule (back into the LR warm-up, say)."""

    total_steps: int
    max_time: float | None
    anchor: tuple[int, float, float] = (0, 0.0, 0.0)

    def progress(self, step: int, elapsed: float) -> float:
        start_step, start_elapsed, start_progress = self.anchor
        done = (step - start_step) / max(self.total_steps - start_step, 1)
        if self.max_time:
            done = max(done, (elapsed - start_elapsed) / max(self.max_time - start_elapsed, 1e-9))
        return min(1.0, start_progress + (1.0 - start_progress) * done)

    def extended_to(self, total_steps: int, max_time: float | None, step: int, elapsed: float) -> "Schedule":
        if (total_steps, max_time) == (self.total_steps, self.max_time):
            return self
        return Schedule(total_steps, max_time, (step, elapsed, self.progress(step, elapsed)))

    def to_dict(self) -> dict:
        return {"total_steps": self.total_steps, "max_time": self.max_time, "anchor": list(self.anchor)}


def epochs_trained(epoch: int, batches_done: int, steps_per_epoch: int) -> int | float:
    """Whole epochs, plus the fraction of one cut short (rounded down to 3 places: never a whole one)."""
    return round(epoch + batches_done * 1000 // steps_per_epoch / 1000, 3) if batches_done else epoch  # 1.253, not 1.2530000000000001


def duration(seconds: float) -> str:
    """A time span as people say it: '45 s', '12 min', '3 h 20 min'."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 90 else f"{minutes // 60} h {minutes % 60:02d} min"


def time_left(schedule: Schedule, step: int, elapsed: float, since: tuple[int, float]) -> float | None:
    """Seconds until the run ends at this session's pace (the progress it made since `since`, a
    (step, elapsed) of this session): the steps left at the steps' rate, capped by what --max-time
    leaves. None before the pace is known."""
    start_step, start_elapsed = since
    if step <= start_step or elapsed <= start_elapsed:
        return None
    done = schedule.progress(step, elapsed)
    pace = (done - schedule.progress(start_step, start_elapsed)) / (elapsed - start_elapsed)
    left = (1.0 - done) / pace if pace > 0 else None
    if schedule.max_time:
        by_clock = schedule.max_time - elapsed
        left = by_clock if left is None else min(left, by_clock)
    return left


class StopRequest:
    """While active (and enabled), the first Ctrl-C asks the run to stop after the current step,
    then evaluate and save as at its end; a second one interrupts at once."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.requested = False
        self._previous = None

    def _ask(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("\nstopping after this step, then evaluating and saving the run (Ctrl-C again to quit "
              "without saving)", file=sys.stderr)

    def __enter__(self) -> "StopRequest":
        # Started in the background, Ctrl-C is ignored (a shell's `&`): it stays so.
        if not self.enabled or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            return self
        try:
            self._previous = signal.signal(signal.SIGINT, self._ask)
        except ValueError:  # not the main thread (main() called from a worker): Ctrl-C as usual
            self._previous = None
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
