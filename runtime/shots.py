"""`--shots FILE`: per-shot smoothness, written by the animator.

A small text file, one rule a line; `#` starts a comment, blank lines are skipped:

```
# where         settings
0-2.5           cadence 4          # from 0 s to 2.5 s: a new picture every 4 output frames
scene 2         off                # the 2nd scene as `dainrt run --dry-run` lists it: originals only
scenes 3-4      fps 30 keep-holds 6
1:02.5-end      factor 2
```

*Where*: `START-END` in seconds (`2.5`, or `M:SS.s`; END may be `end`; the range includes START
and excludes END), `scene N` or `scenes N-M` (scene numbers from 1, split at the detected cuts;
`dainrt run --dry-run` prints them with their times). *Settings*, any of:

* `off`: originals only: every output frame shows the input picture on screen at its time;
* `cadence K`: a new picture every K output frames (each held for K);
* `fps RATE` / `factor N`: a new picture RATE times a second / N times per input frame, i.e.
  the cadence output rate / RATE (it must divide the output rate exactly: 15, 20, 30 on 60);
* `keep-holds N` (or `keep-holds off`): with `--dedup`, a picture held more than N frames stays
  a hold (`off`: every hold is interpolated through).

Where rules overlap, the later line wins; moments no rule covers take the command line's
settings (`--cadence`, `--keep-holds`). A rule states only what it changes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

from dainrt.base.errors import DainrtError

from .timing import ShotSettings, Shots, format_rate, parse_rate

_TIME = re.compile(r"(?:(\d+):)?(\d+(?:\.\d*)?|\.\d+)")


@dataclass(frozen=True)
class Rule:
    """One line: a time range [start, end) in seconds or a scene range [first, last], and what it sets."""

    line: int
    start: Fraction | None = None
    end: Fraction | None = None          # None: the end of the film
    first: int | None = None
    last: int | None = None
    off: bool | None = None
    cadence: int | None = None
    rate: Fraction | None = None         # fps RATE
    factor: int | None = None
    keep_holds: int | None | str = "unset"

    def covers(self, time: Fraction, scene: int) -> bool:
        if self.first is not None:
            return self.first <= scene <= self.last
        return self.start <= time and (self.end is None or time < self.end)

    def describe(self) -> dict:
        where = ({"scenes": [self.first, self.last]} if self.first is not None
                 else {"from": float(self.start), "to": None if self.end is None else float(self.end)})
        what = {k: v for k, v in (("off", self.off), ("cadence", self.cadence), ("factor", self.factor),
                                  ("fps", None if self.rate is None else format_rate(self.rate))) if v is not None}
        if self.keep_holds != "unset":
            what["keep_holds"] = self.keep_holds
        return {"line": self.line, **where, **what}


def _time(text: str, where: str) -> Fraction:
    m = _TIME.fullmatch(text)
    if not m:
        raise DainrtError(f"{where}: {text!r} is not a time (seconds such as 2.5, or M:SS.s)")
    return Fraction(int(m.group(1) or 0) * 60) + Fraction(m.group(2))


def _count(text: str, where: str, what: str) -> int:
    if not re.fullmatch(r"\d+", text) or int(text) < 1:
        raise DainrtError(f"{where}: {what} takes a whole number of 1 or more, got {text!r}")
    return int(text)


def parse_rules(text: str, name: str = "shots file") -> list[Rule]:
    """The rules of a shots file's text (see the module docstring); one-line errors naming the line."""
    rules = []
    for number, raw in enumerate(text.splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        where = f"{name} line {number}"
        fields: dict = {"line": number}
        if words[0] in ("scene", "scenes"):
            if len(words) < 2:
                raise DainrtError(f"{where}: give the scene number, e.g. 'scene 2' or 'scenes 2-4'")
            lo, _, hi = words[1].partition("-")
            fields["first"] = _count(lo, where, "scene")
            fields["last"] = _count(hi, where, "scene") if hi else fields["first"]
            if fields["last"] < fields["first"]:
                raise DainrtError(f"{where}: scenes {words[1]} run backwards")
            words = words[2:]
        else:
            lo, sep, hi = words[0].partition("-")
            if not sep:
                raise DainrtError(f"{where}: start with a time range such as 0-2.5 (seconds) or 'scene N', got {words[0]!r}")
            fields["start"] = _time(lo, where)
            fields["end"] = None if hi == "end" else _time(hi, where)
            if fields["end"] is not None and fields["end"] <= fields["start"]:
                raise DainrtError(f"{where}: the range {words[0]} is empty (the end must come after the start)")
            words = words[1:]
        if not words:
            raise DainrtError(f"{where}: no settings (off, cadence K, fps RATE, factor N, keep-holds N)")
        i = 0
        while i < len(words):
            key = words[i]
            if key == "off":
                fields["off"] = True
                i += 1
                continue
            if key not in ("cadence", "fps", "factor", "keep-holds"):
                raise DainrtError(f"{where}: unknown setting {key!r} (use off, cadence K, fps RATE, factor N, keep-holds N)")
            if i + 1 >= len(words):
                raise DainrtError(f"{where}: {key} needs a value")
            value = words[i + 1]
            if key == "fps":
                try:
                    fields["rate"] = parse_rate(value)
                except ValueError as err:
                    raise DainrtError(f"{where}: {err}") from None
            elif key == "keep-holds":
                fields["keep_holds"] = None if value == "off" else _count(value, where, key)
            else:
                fields[key] = _count(value, where, key)
            i += 2
        if sum(fields.get(k) is not None for k in ("cadence", "rate", "factor")) > 1:
            raise DainrtError(f"{where}: give one of cadence, fps and factor")
        rules.append(Rule(**fields))
    return rules


def read_rules(path: str | Path) -> list[Rule]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DainrtError(f"cannot read {path}: not a UTF-8 text file") from None
    except OSError as err:
        raise DainrtError(f"cannot read {path}: {err.strerror}") from None
    return parse_rules(text, str(path))


class RuleShots(Shots):
    """`Shots` from rules: the last rule covering a moment changes the base settings."""

    def __init__(self, base: ShotSettings, rules: list[Rule], output_rate: Fraction | None,
                 input_rate: Fraction | None, name: str = "shots file"):
        super().__init__(base)
        self.rules = rules
        self.settings = [self._settings(r, output_rate, input_rate, name) for r in rules]

    def _settings(self, rule: Rule, out_rate, in_rate, name) -> ShotSettings:
        s = self.base
        if rule.off is not None:
            s = replace(s, off=rule.off)
        if rule.keep_holds != "unset":
            s = replace(s, keep_holds=rule.keep_holds)
        if rule.cadence is not None:
            s = replace(s, cadence=rule.cadence)
        if rule.rate is not None or rule.factor is not None:
            where = f"{name} line {rule.line}"
            if out_rate is None:
                raise DainrtError(f"{where}: fps/factor need a constant output rate; use cadence K")
            rate = rule.rate if rule.rate is not None else (in_rate * rule.factor if in_rate else None)
            if rate is None:
                raise DainrtError(f"{where}: factor needs constant-rate input; use cadence K")
            cadence = out_rate / rate
            if cadence.denominator != 1 or cadence < 1:
                raise DainrtError(f"{where}: {format_rate(rate)} new pictures a second do not divide the output "
                                  f"rate {format_rate(out_rate)} (use a rate such as {format_rate(out_rate / 2)})")
            s = replace(s, cadence=int(cadence))
        return s

    def at(self, time: Fraction, scene: int) -> tuple[int, ShotSettings]:
        for i in range(len(self.rules) - 1, -1, -1):
            if self.rules[i].covers(time, scene):
                return i, self.settings[i]
        return -1, self.base


def scene_list(cuts: list[dict], start: Fraction, end: Fraction) -> list[dict]:
    """The detected scenes (shots) with their times, as `--shots` numbers them: split at `cuts`
    (the report's scene cuts: time, first frame)."""
    bounds = [(float(start), 0)] + [(c["time"], c["frame"]) for c in cuts]
    out = []
    for n, (t0, f0) in enumerate(bounds, 1):
        t1 = bounds[n][0] if n < len(bounds) else float(end)
        out.append({"scene": n, "start": round(t0, 6), "end": round(t1, 6), "first_frame": f0})
    return out
