"""When a cheap pipeline goes blind, fall back to Holistic; probe the cheap one to come back.

Pure policy, no I/O: the worker asks `plan()` which landmarkers to run on the next frame, runs
them, and tells `observe()` which parts each found. The policy never guesses what Holistic would
find: it runs both on the same frame ("dual" frames) and compares.

- Cheap mode: after `miss_limit` frames in a row missing a part the session wants, the next frame
  is dual. If Holistic found a wanted part the cheap pipeline missed, switch to Holistic
  ("fallback"); otherwise the scene really lacks it, and checks back off.
- Holistic mode: every `gap` frames a dual frame probes the cheap pipeline; when it finds every
  wanted part Holistic found, switch back ("recovered").
- `gap` doubles after every dual frame (up to `max_gap`), so a scene that flips between the two
  costs a bounded number of dual frames and warnings; it starts over once the cheap pipeline has
  been complete for `max_gap` frames.
- A landmarker not run for `linger` frames is closed (memory is what admission prices); a later
  dual frame makes a fresh one.

On a dual frame the result delivered is that of the mode chosen after it: Holistic's when it found
a wanted part the cheap pipeline missed, else the cheap one's, which then has every wanted part
Holistic found.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

HOLISTIC = "holistic"
CHEAP = frozenset({"face", "pose", "hands"})  # the single-part pipelines this policy watches
# The parts whose presence is compared; world variants come with them.
TRACKED: tuple[str, ...] = ("face", "pose", "left_hand", "right_hand")


@dataclass(frozen=True, slots=True)
class FallbackSettings:
    miss_limit: int = 2  # consecutive incomplete cheap frames before a dual frame
    first_gap: int = 8  # frames between dual frames at first
    max_gap: int = 128  # backoff ceiling (~8.5 s at 15 fps)
    linger: int = 30  # frames an idle landmarker stays open


@dataclass(frozen=True, slots=True)
class Verdict:
    deliver: str  # the pipeline whose result this frame sends
    switched: str | None  # "fallback" (to holistic), "recovered" (back to cheap) or None
    close: tuple[str, ...]  # landmarkers to close now


def found_parts(parts: Mapping[str, object]) -> frozenset[str]:
    """The tracked parts a pipeline found in one frame (its result dict, None = not found)."""
    return frozenset(p for p in TRACKED if parts.get(p) is not None)


def targets(wanted: Iterable[str]) -> frozenset[str]:
    """The tracked parts among a session's wire parts (`pose_world` counts as `pose`, etc.)."""
    names = set(wanted)
    return frozenset(p for p in TRACKED if p in names or f"{p}_world" in names)


class FallbackPolicy:
    def __init__(
        self, cheap: str, wanted: frozenset[str], settings: FallbackSettings | None = None
    ) -> None:
        if cheap == HOLISTIC:
            raise ValueError("the fallback policy is for the cheap pipelines")
        self.cheap = cheap
        self.wanted = wanted
        self.settings = settings or FallbackSettings()
        self.mode = cheap  # the pipeline that runs on ordinary frames
        self.switches = 0
        self._gap = self.settings.first_gap
        self._since_dual = self.settings.max_gap  # the first check may come at once
        self._misses = 0  # consecutive cheap frames missing a wanted part
        self._complete = 0  # consecutive cheap frames with every wanted part
        self._idle: dict[str, int] = {cheap: 0}  # open landmarker -> frames since it ran

    @property
    def gap(self) -> int:
        return self._gap

    def plan(self) -> tuple[str, ...]:
        """The landmarkers to run on the next frame, current mode first."""
        if self.mode == HOLISTIC:
            return (HOLISTIC, self.cheap) if self._since_dual >= self._gap else (HOLISTIC,)
        due = self._misses >= self.settings.miss_limit and self._since_dual >= self._gap
        return (self.cheap, HOLISTIC) if due else (self.cheap,)

    def observe(self, found: Mapping[str, frozenset[str]]) -> Verdict:
        """Digest what each landmarker that ran found; say what to send and what to close."""
        for name in self._idle:
            self._idle[name] += 1
        for name in found:
            self._idle[name] = 0
        switched: str | None = None
        if self.cheap in found and HOLISTIC in found:
            switched = self._judge(found[self.cheap], found[HOLISTIC])
        elif self.mode == self.cheap and self.cheap in found:
            self._count(found[self.cheap])
        self._since_dual += 1  # counting this frame: the next dual frame comes `gap` after
        close = tuple(
            name
            for name, idle in self._idle.items()
            if name != self.mode and idle >= self.settings.linger
        )
        for name in close:
            del self._idle[name]
        return Verdict(self.mode, switched, close)

    def _judge(self, cheap: frozenset[str], holistic: frozenset[str]) -> str | None:
        """A dual frame: Holistic wins only if it found a wanted part the cheap one missed."""
        before = self.mode
        self.mode = HOLISTIC if (holistic - cheap) & self.wanted else self.cheap
        self._since_dual = 0
        self._misses = 0
        self._complete = 0
        self._gap = min(self._gap * 2, self.settings.max_gap)
        if self.mode == before:
            return None
        self.switches += 1
        return "fallback" if self.mode == HOLISTIC else "recovered"

    def _count(self, cheap: frozenset[str]) -> None:
        if self.wanted <= cheap:
            self._misses = 0
            self._complete += 1
            if self._complete >= self.settings.max_gap:
                self._gap = self.settings.first_gap  # a settled scene: check promptly again
        else:
            self._misses += 1
            self._complete = 0
