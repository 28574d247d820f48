"""Learning-rate schedules: a number, or A1111's piecewise text "5e-3:100, 1e-3:1000, 1e-5".

Each `rate:step` pair holds `rate` until optimizer step `step` (exclusive); a rate without a step, or with
step -1, holds to the end. A bare number is a constant rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import SettingError


@dataclass(frozen=True)
class LRSchedule:
    pieces: tuple  # ((rate, until_step or None), ...)

    def at(self, step: int) -> float:
        """The rate for optimizer step `step` (0-based)."""
        for rate, until in self.pieces:
            if until is None or step < until:
                return rate
        return self.pieces[-1][0]  # past the last bound: keep the last rate, as A1111 does

    @property
    def text(self) -> str:
        return ", ".join(f"{r:g}" if u is None else f"{r:g}:{u}" for r, u in self.pieces)


def parse_lr(spec) -> LRSchedule:
    """A number or schedule text -> LRSchedule; errors say which piece is wrong and how to write it."""
    if isinstance(spec, (int, float)):
        return LRSchedule(((_rate(float(spec), str(spec)), None),))
    text = str(spec).strip()
    if not text:
        raise SettingError("learning rate is empty; write a number like 5e-3 or a schedule like '5e-3:100, 1e-3'.")
    pieces, last_until = [], 0
    parts = [p.strip() for p in text.split(",")]
    for index, part in enumerate(parts):
        where = f"learning-rate schedule {text!r}, piece {index + 1} ({part!r})"
        if not part:
            raise SettingError(f"{where}: empty piece; remove the extra comma.")
        rate_text, sep, until_text = part.partition(":")
        try:
            rate = float(rate_text)
        except ValueError:
            raise SettingError(f"{where}: {rate_text.strip()!r} is not a number; write e.g. '5e-3:100'.") from None
        rate = _rate(rate, where)
        until = None
        if sep:
            try:
                until = int(until_text)
            except ValueError:
                raise SettingError(f"{where}: the step {until_text.strip()!r} is not a whole number.") from None
            if until == -1:
                until = None
            elif until <= last_until:
                raise SettingError(f"{where}: step {until} must be larger than the previous bound ({last_until}).")
        if until is None and index != len(parts) - 1:
            raise SettingError(f"{where}: only the last piece may run to the end; give this one a step bound.")
        pieces.append((rate, until))
        last_until = until or last_until
    return LRSchedule(tuple(pieces))


def _rate(rate: float, where: str) -> float:
    if not math.isfinite(rate) or rate <= 0:
        raise SettingError(f"{where}: learning rate {rate} must be a positive number.")
    return rate
