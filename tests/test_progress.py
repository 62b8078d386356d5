"""Long commands show a progress bar with rate and ETA on a terminal, and nothing otherwise:
`dainrt interpolate` on a real Middlebury pair, run once on a pseudo-terminal and once piped."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

PAIR = Path(__file__).parent / "data" / "middlebury" / "Dimetrodon"
CLI = "import sys; from dainrt.cli import main; sys.exit(main())"
# tqdm's bar: "interpolating:  50%|#####     | 1/2 [00:03<00:03,  3.1s/frame]" (elapsed<ETA, rate)
BAR = re.compile(r"interpolating:\s+\d+%.*\d+/2 \[\d\d:\d\d<\d\d:\d\d,\s+[\d.]+(s/frame|frame/s)\]")


def _interpolate(out: Path, weights: Path, terminal: bool) -> str:
    """Run `dainrt interpolate` (2 frames); returns what it wrote on stderr."""
    args = [sys.executable, "-c", CLI, "interpolate", str(PAIR / "frame10.png"), str(PAIR / "frame11.png"),
            "-o", str(out), "--factor", "3", "--weights", str(weights)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if not terminal:
        proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr
        return proc.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))   # a 120x24 terminal
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:                 # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=600) == 0
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pseudo-terminals as Linux has them")
def test_bar_with_eta_on_a_terminal_only(tmp_path, small_ckpt):
    shown = _interpolate(tmp_path / "tty", small_ckpt, terminal=True)
    assert BAR.search(shown), shown
    assert "2/2" in shown                                   # the bar reached the end
    piped = _interpolate(tmp_path / "pipe", small_ckpt, terminal=False)
    assert "interpolating" not in piped and "%|" not in piped, piped
    assert len(list((tmp_path / "pipe").glob("*.png"))) == 2
