"""Timing two or more ways of doing the same work on a busy machine: interleaved, in a fresh random
order each round, so whatever else the machine does slows them alike and their ratio is what to read."""
from __future__ import annotations

import random
import time

import numpy as np


def interleaved_p50(work: dict, rounds: int = 50, warmup: int = 5) -> dict:
    """{name: callable} -> {name: median seconds}, over rounds - warmup timed rounds."""
    times = {name: [] for name in work}
    names = list(work)
    for i in range(rounds):
        random.shuffle(names)
        for name in names:
            started = time.perf_counter()
            work[name]()
            if i >= warmup:
                times[name].append(time.perf_counter() - started)
    return {name: float(np.median(t)) for name, t in times.items()}
