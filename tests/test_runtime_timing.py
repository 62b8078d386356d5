"""The planner's arithmetic and the detectors, without video files: exact rates, grids, jobs."""
from __future__ import annotations

from fractions import Fraction as F

import numpy as np
import pytest

from dainrt.runtime.scenes import Detector, differences
from dainrt.runtime.timing import (
    COPY, FADE, HOLD, INTERP, REPEAT, STILL, Anchor, CfrGrid, Planner, SubdivideGrid, Timeline, fraction_gcd, make_grid,
    parse_rate,
)


def test_parse_rate_integers_decimals_rationals_and_ntsc():
    assert parse_rate("60") == 60
    assert parse_rate("60000/1001") == F(60000, 1001)
    assert parse_rate("59.94") == F(60000, 1001)          # NTSC decimals mean the NTSC rate
    assert parse_rate("23.976") == F(24000, 1001)
    assert parse_rate("29.97") == F(30000, 1001)
    assert parse_rate("12.5") == F(25, 2)                 # other decimals are exact
    assert parse_rate("59.9") == F(599, 10)
    for bad in ("abc", "0", "-5", "1/0", "60/", "", "5000"):
        with pytest.raises(ValueError):
            parse_rate(bad)


def _timeline(n, rate, tb=None, start=0):
    tb = tb or 1 / F(rate)
    pts = [start + round(i / F(rate) / tb) for i in range(n)]
    return Timeline.from_timestamps(pts, tb, F(rate))


def test_constant_rate_is_snapped_even_from_millisecond_timestamps():
    # Matroska stores 24 fps as 0, 42, 83, 125 ms: still exactly k/24
    tl = Timeline.from_timestamps([0, 42, 83, 125, 167], F(1, 1000), F(24))
    assert tl.rate == 24 and not tl.vfr
    assert [tl.time(p) for p in (0, 42, 83, 125, 167)] == [F(i, 24) for i in range(5)]
    assert tl.end == F(5, 24)


def test_variable_rate_uses_the_timestamps():
    tl = Timeline.from_timestamps([0, 40, 80, 200, 240], F(1, 1000), F(30), last_duration=40)
    assert tl.vfr and tl.rate is None
    assert tl.time(200) == F(1, 5) and tl.end == F(280, 1000)


@pytest.mark.parametrize("rate_in,rate_out,n,expect_count,tb", [
    (15, 60, 15, 60, F(1, 60)),
    (24, 60, 237, 593, F(1, 60)),                           # the shared clip: 9.875 s -> 593 frames
    (F(30000, 1001), F(60000, 1001), 30, 60, F(1001, 60000)),
    (F(24000, 1001), 60, 24, 61, F(1, 60)),                 # 1.001 s -> 61 frames
])
def test_cfr_grid_exact_times_counts_and_duration(rate_in, rate_out, n, expect_count, tb):
    tl = _timeline(n, rate_in)
    grid = CfrGrid(tl, F(rate_out))
    assert grid.count == expect_count and grid.time_base == tb
    slots = list(grid.finish())
    assert [s.time for s in slots] == [F(k) / F(rate_out) for k in range(expect_count)]
    assert all(s.pts * tb == s.time for s in slots)          # the stated timestamps are exact
    out_duration = F(expect_count) / F(rate_out)
    assert 0 <= out_duration - tl.duration < 1 / F(rate_out)  # duration kept within one output frame


def test_grid_keeps_a_non_zero_start_exactly():
    tl = _timeline(10, 24, tb=F(1, 90000), start=126000)     # starts at 1.4 s (MPEG-TS style)
    grid = CfrGrid(tl, F(60000, 1001))
    s = grid.slot(3)
    assert s.time == F(7, 5) + 3 * F(1001, 60000) and s.pts * grid.time_base == s.time


def test_factor_on_cfr_is_a_rate_and_on_vfr_subdivides():
    assert make_grid(_timeline(4, 12), factor=4).rate == 48
    tl = Timeline.from_timestamps([0, 40, 80, 200], F(1, 1000), F(30), last_duration=40)
    grid = make_grid(tl, factor=2)
    assert isinstance(grid, SubdivideGrid) and grid.time_base == F(1, 2000)
    for p in (0, 40, 80, 200):
        grid.note_input(p * tl.time_base, p)
    slots = list(grid.until(F(1))) + list(grid.finish())
    assert [s.time * 1000 for s in slots] == [0, 20, 40, 60, 80, 140, 200, 220]
    assert [s.pts for s in slots] == [0, 40, 80, 120, 160, 280, 400, 440]


def _plan(times, rate, cuts=(), mode="repeat", end=None):
    tl = Timeline.from_timestamps([round(t * 1000) for t in times], F(1, 1000), None,
                                  last_duration=None if end is None else round((end - times[-1]) * 1000))
    grid = CfrGrid(tl, F(rate))
    planner = Planner(grid, mode)
    jobs = []
    for i, t in enumerate(times):
        grid.note_input(F(t), round(t * 1000))
        jobs += planner.push(Anchor(i, F(t), round(t * 1000)), cut=i in cuts)
    return jobs + planner.finish()


def test_planner_24_to_60_copies_and_t_values():
    jobs = _plan([F(i, 24) for i in range(3)], 60)
    assert [(j.kind, j.src, j.dst, j.t_exact) for j in jobs[:6]] == [
        (COPY, 0, None, None), (INTERP, 0, 1, F(2, 5)), (INTERP, 0, 1, F(4, 5)),
        (INTERP, 1, 2, F(1, 5)), (INTERP, 1, 2, F(3, 5)), (COPY, 2, None, None)]
    assert [j.kind for j in jobs[6:]] == [HOLD, HOLD]        # 2/24 .. 3/24 after the last frame


def test_planner_never_interpolates_across_a_cut():
    jobs = _plan([F(i, 24) for i in range(4)], 60, cuts={2})
    across = [j for j in jobs if F(1, 24) < j.slot.time < F(2, 24)]
    assert across and all(j.kind == REPEAT and j.src == 1 for j in across)
    assert not any(j.kind == INTERP and (j.src, j.dst) == (1, 2) for j in jobs)
    faded = [j for j in _plan([F(i, 24) for i in range(4)], 60, cuts={2}, mode="crossfade") if j.kind == FADE]
    assert [(j.src, j.dst, j.t_exact) for j in faded] == [(1, 2, F(1, 5)), (1, 2, F(3, 5))]


def test_planner_with_held_frames_dropped_times_interpolations_over_the_hold():
    # on twos at 24 fps: drawings at 0, 2/24, 4/24 (the frames at 1/24, 3/24 were dropped)
    jobs = _plan([F(0), F(2, 24), F(4, 24)], 60, end=F(6, 24))
    first = [(j.kind, j.t_exact) for j in jobs if j.slot.time < F(2, 24)]
    assert first == [(COPY, None), (INTERP, F(1, 5)), (INTERP, F(2, 5)), (INTERP, F(3, 5)), (INTERP, F(4, 5))]


def test_planner_state_round_trips_for_resume():
    tl = _timeline(6, 12)
    grid = CfrGrid(tl, F(48))
    planner = Planner(grid)
    for i in range(3):
        planner.push(Anchor(i, F(i, 12), i))
    state = planner.state()
    rest = [planner.push(Anchor(i, F(i, 12), i)) for i in range(3, 6)] + [planner.finish()]
    again = Planner(CfrGrid(tl, F(48)))
    anchor = again.restore(state)
    assert anchor == Anchor(2, F(2, 12), 2)
    assert [again.push(Anchor(i, F(i, 12), i)) for i in range(3, 6)] + [again.finish()] == rest


def _planned(times, rate, dups=(), cuts=(), dedup=True, shots=None, end=None):
    """Plan frames at `times` (seconds); `dups`: indices the detector found held."""
    tl = Timeline.from_timestamps([round(t * 1000) for t in times], F(1, 1000), None,
                                  last_duration=None if end is None else round((end - times[-1]) * 1000))
    planner = Planner(CfrGrid(tl, F(rate)), dedup=dedup, shots=shots)
    jobs = []
    for i, t in enumerate(times):
        planner.grid.note_input(F(t), round(t * 1000))
        jobs += planner.push(Anchor(i, F(t), round(t * 1000)), cut=i in cuts, duplicate=i in dups)
    return jobs + planner.finish(), planner


def test_keep_holds_keeps_long_holds_and_interpolates_short_ones():
    # 12 fps: A A B C C C C C C D (C held 6 frames: a pose), to 60 fps (5 output frames per input frame)
    times = [F(i, 12) for i in range(10)]
    jobs, planner = _planned(times, 60, dups={1, 4, 5, 6, 7, 8}, end=F(10, 12))
    table = [(j.slot.k, j.kind, j.src, j.dst, j.t_exact) for j in jobs]
    assert len(jobs) == 50
    # A is held 2 frames (<= 4): interpolated through, A -> B over 2/12 s
    assert table[:10] == [(0, COPY, 0, None, None)] + [(k, INTERP, 0, 2, F(k, 10)) for k in range(1, 10)]
    assert table[10:15] == [(10, COPY, 2, None, None)] + [(k, INTERP, 2, 3, F(k - 10, 5)) for k in range(11, 15)]
    # C is held 6 frames (> 4): frames 15..40 (3/12 .. 8/12 s) show C itself, then C -> D from 8/12 s
    assert table[15:41] == [(15, COPY, 3, None, None)] + [(k, STILL, 3, None, None) for k in range(16, 41)]
    assert table[41:45] == [(k, INTERP, 3, 9, F(k - 40, 5)) for k in range(41, 45)]
    assert table[45] == (45, COPY, 9, None, None) and {j.kind for j in jobs[46:]} == {HOLD}
    assert planner.holds == [{"frame": 3, "start": 0.25, "end": 0.75, "frames": 6, "scene": 1}]
    # keep-holds off (None): every hold interpolated through; 1: every hold kept
    from dainrt.runtime.timing import ShotSettings, Shots

    through, p = _planned(times, 60, dups={1, 4, 5, 6, 7, 8}, shots=Shots(ShotSettings(keep_holds=None)), end=F(10, 12))
    assert p.holds == [] and [j.kind for j in through[15:45]] == [COPY] + [INTERP] * 29
    every, p = _planned(times, 60, dups={1, 4, 5, 6, 7, 8}, shots=Shots(ShotSettings(keep_holds=1)), end=F(10, 12))
    assert [h["frame"] for h in p.holds] == [0, 3] and [j.kind for j in every[:6]] == [COPY] + [STILL] * 5


def test_cadence_shows_a_new_picture_every_k_frames_at_exact_times():
    from dainrt.runtime.timing import ShotSettings, Shots

    times = [F(i, 15) for i in range(3)]
    jobs, _ = _planned(times, 60, dedup=False, shots=Shots(ShotSettings(cadence=2)), end=F(3, 15))
    table = [(j.slot.k, j.kind, j.src, j.dst, j.t_exact, j.again) for j in jobs]
    assert table[:8] == [(0, COPY, 0, None, None, False), (1, STILL, 0, None, None, True),
                         (2, INTERP, 0, 1, F(1, 2), False), (3, INTERP, 0, 1, F(1, 2), True),
                         (4, COPY, 1, None, None, False), (5, STILL, 1, None, None, True),
                         (6, INTERP, 1, 2, F(1, 2), False), (7, INTERP, 1, 2, F(1, 2), True)]
    # cadence 4 at 15 -> 60: only the originals, each held 4 output frames ("15 on 60")
    jobs, _ = _planned(times, 60, dedup=False, shots=Shots(ShotSettings(cadence=4)), end=F(3, 15))
    assert [(j.kind, j.src) for j in jobs] == [(COPY, i // 4) if i % 4 == 0 else (STILL, i // 4) for i in range(12)]


def test_shots_file_rules_by_time_and_scene():
    from dainrt.base.errors import DainrtError
    from dainrt.runtime.shots import RuleShots, parse_rules
    from dainrt.runtime.timing import ShotSettings

    rules = parse_rules("""
        # where   settings
        0-0.5     cadence 4        # the first half second: 15 on 60
        scene 2   off
        1:00-end  fps 30 keep-holds 6
    """)
    shots = RuleShots(ShotSettings(), rules, F(60), F(15))
    assert shots.at(F(1, 4), 1) == (0, ShotSettings(cadence=4))
    assert shots.at(F(1, 2), 1) == (-1, ShotSettings())                  # the end is excluded
    assert shots.at(F(1, 4), 2) == (1, ShotSettings(off=True))           # the later line wins
    assert shots.at(F(61), 3) == (2, ShotSettings(cadence=2, keep_holds=6))
    # a cut at frame 3 of 15 fps: scene 2 (from 3/15 s) is originals only
    times = [F(i, 15) for i in range(6)]
    jobs, _ = _planned(times, 60, cuts={3}, dedup=False, shots=RuleShots(ShotSettings(), parse_rules("scene 2 off"), F(60), F(15)))
    assert [j.kind for j in jobs[:12]] == [COPY, INTERP, INTERP, INTERP] * 2 + [COPY, REPEAT, REPEAT, REPEAT]
    assert [(j.kind, j.src) for j in jobs[12:20]] == [(COPY, 3), (STILL, 3), (STILL, 3), (STILL, 3), (COPY, 4),
                                                     (STILL, 4), (STILL, 4), (STILL, 4)]
    for bad, message in (("0-1", "no settings"), ("1-0.5 off", "empty"), ("scene x off", "whole number"),
                         ("0-1 cadence 0", "1 or more"), ("0-1 speed 2", "unknown setting"), ("off", "time range"),
                         ("0-1 fps 25 cadence 2", "one of")):
        with pytest.raises(DainrtError, match=message):
            parse_rules(bad)
    with pytest.raises(DainrtError, match="line 1: 25 new pictures a second do not divide"):
        RuleShots(ShotSettings(), parse_rules("0-1 fps 25"), F(60), F(15))


def test_planner_with_holds_and_cadence_resumes_from_its_state():
    from dainrt.runtime.timing import ShotSettings, Shots

    times = [F(i, 12) for i in range(10)]
    dups = {1, 4, 5, 6, 7, 8}
    whole, _ = _planned(times, 60, dups=dups, shots=Shots(ShotSettings(cadence=3)), end=F(10, 12))
    for stop in range(1, 10):
        tl = Timeline.from_timestamps([round(t * 1000) for t in times], F(1, 1000), None, last_duration=83)
        first = Planner(CfrGrid(tl, F(60)), dedup=True, shots=Shots(ShotSettings(cadence=3)))
        jobs = []
        for i in range(stop):
            jobs += first.push(Anchor(i, times[i], round(times[i] * 1000)), duplicate=i in dups)
        import json
        state = json.loads(json.dumps(first.state()))
        again = Planner(CfrGrid(tl, F(60)), dedup=True, shots=Shots(ShotSettings(cadence=3)))
        assert again.restore(state) == Anchor(stop - 1, times[stop - 1], round(times[stop - 1] * 1000))
        assert {a.index for a in again.needed_anchors()} == first.needed()
        for i in range(stop, 10):
            jobs += again.push(Anchor(i, times[i], round(times[i] * 1000)), duplicate=i in dups)
        jobs += again.finish()
        assert [(j.slot, j.kind, j.src, j.dst, j.t_exact, j.again) for j in jobs] == \
            [(j.slot, j.kind, j.src, j.dst, j.t_exact, j.again) for j in whole], stop


def test_fraction_gcd():
    assert fraction_gcd(F(7, 5), F(1001, 60000)) == F(7, 60000)
    assert fraction_gcd(F(0), F(1, 60)) == F(1, 60)


def test_detector_duplicates_and_cuts():
    from dainrt.runtime.synthetic import pictures

    rng = np.random.default_rng(0)
    a, moved = pictures(2, 64, 36, seed=2, step=(2, 0))
    noisy = np.clip(a.astype(int) + rng.integers(-2, 3, a.shape), 0, 255).astype(np.uint8)
    other = 255 - a
    det = Detector(dedup=True)
    assert not det.check(a).cut
    d = det.check(noisy)
    assert d.duplicate and d.drop and d.peak <= 1.0                    # held: dropped
    d = det.check(moved)
    assert not d.duplicate and not d.cut                               # motion: neither
    d = det.check(other)
    assert d.cut and d.score > 20                                      # everything changed: a cut
    assert differences(a, a) == (0.0, 0.0)
    keep = Detector(dedup=False)
    keep.check(a)
    d = keep.check(noisy)
    assert d.duplicate and not d.drop                                  # reported, not dropped
    off = Detector(scene_threshold=0)
    off.check(a)
    assert not off.check(other).cut                                    # 0 turns cut detection off
