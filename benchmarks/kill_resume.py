"""Kill and resume at scale: `dainrt run` killed with SIGKILL at random moments, resumed each time.

A generated clip with audio is interpolated once without interruption (the reference), then again
in a fresh folder by a chain of `dainrt run --resume` processes, each killed with SIGKILL after a
random delay, until one finishes. The two outputs must match: every decoded video frame (pixel for
pixel: the output is lossless FFV1), every frame's timestamp, and every audio packet's bytes and
timestamp.

    python -m dainrt.benchmarks.kill_resume [--kills 20] [--frames 96] [--seed 0]

A SIGKILL gives the process no chance to clean up: it lands in the middle of decoding, inference,
encoding a segment, or writing the state file, and the next `--resume` must cope with whatever
it left. Too slow for CI (minutes: every restart loads torch and the model); run it by hand.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _clip(tmp: Path, frames: int) -> str:
    from dainrt.runtime.synthetic import moving, write_clip

    return write_clip(str(tmp / "clip.mkv"), moving(frames, 96, 64, seed=1), rate=12, codec="ffv1",
                      pix_fmt="yuv444p", audio_seconds=frames / 12, audio_codec="flac")


def _checkpoint(tmp: Path) -> str:
    from dainrt.model import ModelConfig
    from dainrt.model.checkpoint import save_checkpoint, synthetic_state_dict

    config = ModelConfig(width=0.25)
    return str(save_checkpoint(synthetic_state_dict(config, seed=0), config, tmp / "small.pth"))


def _command(clip: str, out: Path, weights: str, segment_frames: int) -> list[str]:
    return [sys.executable, "-m", "dainrt", "run", clip, "-o", str(out), "--factor", "2", "--weights", weights,
            "--codec", "ffv1", "--segment-frames", str(segment_frames), "--no-progress"]


def _contents(path: Path) -> dict:
    """Decoded frames (bytes), their timestamps, and the audio packets of a film."""
    import av

    with av.open(str(path)) as c:
        video = [(f.pts * f.time_base, f.to_ndarray(format="rgb24").tobytes()) for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        audio = [(p.pts * p.time_base, bytes(p)) for p in c.demux(audio=0) if p.size]
    return {"video": video, "audio": audio}


def kill_and_resume(kills: int, frames: int, seed: int, segment_frames: int = 6, log=print) -> dict:
    rng = random.Random(seed)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory(prefix="dainrt-kill-") as d:
        tmp = Path(d)
        clip, weights = _clip(tmp, frames), _checkpoint(tmp)
        reference = tmp / "reference.mkv"
        start = time.perf_counter()
        subprocess.run(_command(clip, reference, weights, segment_frames), env=env, check=True,
                       capture_output=True)
        uninterrupted_s = time.perf_counter() - start
        start = time.perf_counter()
        subprocess.run(_command(clip, tmp / "plan.mkv", weights, segment_frames) + ["--dry-run"], env=env, check=True,
                       capture_output=True)
        startup_s = time.perf_counter() - start           # imports, probe and plan: no progress is made
        log(f"uninterrupted run: {uninterrupted_s:.1f} s (start-up about {startup_s:.1f} s)")
        # Kill moments: after the start-up, plus a random share of the work, sized so that `kills`
        # processes do about 80 % of the film between them and the chain is not over too early.
        work_s = max(1.0, uninterrupted_s - startup_s) / kills

        out = tmp / "killed.mkv"
        delays, attempts = [], 0
        while not out.exists():
            attempts += 1
            cmd = _command(clip, out, weights, segment_frames) + (["--resume"] if attempts > 1 else [])
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if len(delays) < kills:
                delay = rng.uniform(0.5 * startup_s, startup_s + 1.6 * work_s)
                try:
                    proc.wait(timeout=delay)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    delays.append(round(delay, 2))
                    log(f"kill {len(delays):2d}/{kills} after {delay:.2f} s")
                    continue
            else:
                proc.wait()
            err = proc.stderr.read()
            if proc.returncode != 0:
                raise RuntimeError(f"dainrt run exited {proc.returncode} on attempt {attempts}: {err.strip()[-500:]}")
        a, b = _contents(reference), _contents(out)
        same = {k: a[k] == b[k] for k in a}
        if len(delays) < kills:
            log(f"the run finished after {len(delays)} of {kills} kills (a longer --frames makes more room)")
        return {"frames_in": frames, "frames_out": len(a["video"]), "audio_packets": len(a["audio"]),
                "kills": len(delays), "kill_delays_s": delays, "processes": attempts,
                "uninterrupted_s": round(uninterrupted_s, 1), "identical": same}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs in a row before a run may finish (default 20)")
    p.add_argument("--frames", type=int, default=96, help="input frames of the generated clip (default 96)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random kill moments")
    args = p.parse_args(argv)
    r = kill_and_resume(args.kills, args.frames, args.seed)
    print(f"{r['kills']} kills in {r['processes']} processes; {r['frames_out']} frames, {r['audio_packets']} audio "
          f"packets; identical to the uninterrupted run: {r['identical']}")
    return 0 if all(r["identical"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
