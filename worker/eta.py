"""How long a dream has left: its remaining steps weighed by their pixels.

The engine dreams a pyramid of octaves, smallest first, each ``octave_scale`` (1.4) times the
last (worker/dream.py), and a step costs about its octave's pixels: a step of the last octave
about twice one of the octave before.  Counting steps alone, the estimate made in the small
first octaves is far too short.  So the work is counted in pixel-steps, and the time per
pixel-step is measured on the steps done so far, less the first one timed, which also pays
for warming up (buffers at a new size, a first trace).
"""
from __future__ import annotations

from shared.models import octave_shapes


def octave_pixels(height: int, width: int, octaves: int, scale: float, ran: int) -> list[int]:
    """Pixels of each octave the engine runs: the ``ran`` largest of the seed's shapes (it skips
    the smallest a network cannot take; the engine's Progress.octaves says how many ran)."""
    return [h * w for h, w in octave_shapes(height, width, octaves, scale)[-ran:]]


class Eta:
    """The time left of ``units`` dreams of one picture size (an image: 1; a zoom: its frames)."""

    def __init__(self, height: int, width: int, params, units: int = 1):
        self.size, self.params, self.units = (height, width), params, units
        self.pixels: list[int] | None = None  # known at the first step: how many octaves run
        self.first: tuple[float, float] | None = None  # (work, elapsed s) when first timed

    @property
    def per_unit(self) -> float:
        """One dream's work in pixel-steps (1 while no step has said how many octaves run)."""
        return float(sum(self.pixels) * self.params.iterations) if self.pixels else 1.0

    def done(self, units: int, p=None) -> float:
        """Work done: ``units`` whole dreams, then ``p`` (the engine's Progress) into the next."""
        if p is None:
            return units * self.per_unit
        if self.pixels is None:
            self.pixels = octave_pixels(*self.size, self.params.octaves, self.params.octave_scale, p.octaves)
        return units * self.per_unit + sum(self.pixels[:p.octave]) * p.steps + self.pixels[p.octave] * (p.step + 1)

    def left_s(self, work: float, elapsed_s: float) -> float | None:
        """Seconds left, ``work`` being done after ``elapsed_s`` (any clock, the same each call);
        None until there is a rate to go by."""
        if self.first is None:
            self.first = (work, elapsed_s)
        w0, t0 = self.first
        if work <= w0:
            return None
        return max(0.0, (elapsed_s - t0) / (work - w0) * (self.units * self.per_unit - work))
