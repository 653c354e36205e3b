"""What a run shows while it trains: a tqdm bar on an interactive terminal only, and a few plain
progress lines (at most about `LINES_PER_RUN` per run), which read the same in a terminal, in a log
file and in `ray job submit`'s output."""

from __future__ import annotations

import math
import sys
import time
from typing import Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")
LINES_PER_RUN = 10


def interactive() -> bool:
    return sys.stderr.isatty()


def duration(seconds: float) -> str:
    minutes, s = divmod(int(round(seconds)), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m" if hours else f"{m}m{s:02d}s"


class Progress:
    """Rank 0's progress display for one run; every other rank gets a silent one (`shown=False`)."""

    def __init__(self, name: str, epochs: int, steps_per_epoch: int, shown: bool) -> None:
        self.name, self.epochs, self.steps_per_epoch, self.shown = name, epochs, steps_per_epoch, shown
        self.every = max(1, math.ceil(epochs / LINES_PER_RUN))
        self.started = time.time()
        self.first_epoch: int | None = None  # the epoch this process started at (after a resume, not 0)
        self.bar: tqdm | None = None

    def batches(self, batches: Iterable[T], epoch: int, first_step: int) -> Iterator[T]:
        """The epoch's batches, behind a bar when a person is watching a terminal."""
        if self.first_epoch is None:
            self.first_epoch = epoch
        if not (self.shown and interactive()):
            return iter(batches)
        self.bar = tqdm(batches, total=self.steps_per_epoch, initial=first_step, leave=False, dynamic_ncols=True,
                        desc=f"{self.name} epoch {epoch + 1}/{self.epochs}")
        return iter(self.bar)

    def step_done(self, values: dict[str, float], images_per_s: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{values['total']:.3f}", img_s=f"{images_per_s:.0f}", refresh=False)

    def epoch_done(self, epoch: int, step: int, metrics: dict[str, float], evaluation: dict[str, float] | None) -> None:
        """One line for this epoch when it is due (every `every` epochs, the first, the last, or an evaluation)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        due = epoch % self.every == 0 or epoch in (1, self.epochs) or evaluation is not None
        if not (self.shown and due):
            return
        parts = ", ".join(f"{k.removeprefix('loss_')} {v:.3f}" for k, v in metrics.items()
                          if k.startswith("loss_"))
        line = (f"{self.name}: epoch {epoch}/{self.epochs} step {step} | loss {metrics['loss']:.3f} ({parts}) | "
                f"{metrics['images_per_s']:.0f} img/s | eta {duration(self.eta(epoch))}")
        if evaluation is not None:
            line += (f" | acc {evaluation['acc_top1']:.1f} (many {evaluation['acc_many']:.1f}, "
                     f"medium {evaluation['acc_medium']:.1f}, few {evaluation['acc_few']:.1f})")
        print(line, flush=True)

    def eta(self, epoch: int) -> float:
        done = epoch - (self.first_epoch or 0)
        return (time.time() - self.started) / max(done, 1) * (self.epochs - epoch)

    def say(self, message: str) -> None:
        if self.shown:
            print(f"{self.name}: {message}", flush=True)
