"""`dainrt weights ...`, weight resolution and the resumable download (against a real loopback
HTTP server)."""
from __future__ import annotations

import hashlib
import os
import random
import re
import socket
import subprocess
import sys
import threading
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from dainrt.model.checkpoint import load_checkpoint, save_checkpoint
from dainrt.cli import main
from dainrt.base.errors import DainrtError
from dainrt.model import ModelConfig
from dainrt.model.weights import BUNDLED_WEIGHTS, cache_dir, download, resolve_weights

REPO = Path(__file__).resolve().parents[1]
SMALL_PARAMS = 1_949_481          # parameters of DAIN at width 0.25


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No weights or cache settings from the developer's environment; HOME in tmp."""
    for var in ("DAINRT_WEIGHTS", "DAINRT_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory) -> Path:
    """`dainrt weights init --width 0.25 --seed 1`, run once in-process."""
    path = tmp_path_factory.mktemp("ckpt") / "small.pth"
    assert main(["weights", "init", "--width", "0.25", "--seed", "1", "-o", str(path)]) == 0
    return path


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dainrt", *args], capture_output=True, text=True, cwd=REPO,
        env={**os.environ, **(env or {})}, timeout=60,
    )


# ----------------------------------------------------------------------------------------------
# init / verify


def test_init_then_verify(small_ckpt, capsys):
    sd, config = load_checkpoint(small_ckpt)
    assert config.width == 0.25 and len(sd) == 954
    assert main(["weights", "verify", str(small_ckpt)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == f"OK: {SMALL_PARAMS} parameters, width 0.25"
    assert out[0] == f"sha256: {hashlib.sha256(small_ckpt.read_bytes()).hexdigest()}" and out[1].startswith("git blob id: ")


def test_init_prints_path_and_count(tmp_path, capsys):
    path = tmp_path / "deep" / "w.pth"
    assert main(["weights", "init", "--width", "0.25", "--seed", "9", "-o", str(path)]) == 0
    out = capsys.readouterr().out
    assert str(path) in out and f"{SMALL_PARAMS} parameters" in out
    assert path.is_file() and sorted(os.listdir(path.parent)) == ["w.pth"]


def test_verify_broken_file_subprocess(tmp_path, small_ckpt):
    sd, config = load_checkpoint(small_ckpt)
    sd = OrderedDict(sd)
    del sd["flownets.conv1a.0.weight"]
    sd["rectifyNet.block1.0.weight"] = torch.zeros(2, 3)
    sd["stray.key"] = torch.zeros(1)
    broken = save_checkpoint(sd, config, tmp_path / "broken.pth")

    res = run_cli("weights", "verify", str(broken))
    assert res.returncode == 1
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    assert "missing keys (1):\n  flownets.conv1a.0.weight\n" in res.stdout
    assert "unexpected keys (1):\n  stray.key" in res.stdout
    assert "rectifyNet.block1.0.weight: expected [" in res.stdout and "got [2, 3]" in res.stdout
    assert res.stderr.strip().splitlines() == [f"dainrt: error: {broken}: 1 missing, 1 unexpected, 1 mis-shaped keys"]


def test_verify_lists_at_most_ten_keys(tmp_path, small_ckpt, capsys):
    sd, config = load_checkpoint(small_ckpt)
    sd = OrderedDict(list(sd.items())[:-30])          # drop the last 30 keys: 6 are BN counters
    path = save_checkpoint(sd, config, tmp_path / "short.pth")
    assert main(["weights", "verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert "note: 6 BatchNorm num_batches_tracked counters are absent" in out
    assert "missing keys (24):" in out and "  ... and 14 more" in out
    listed = re.search(r"missing keys \(24\):\n((?:  .*\n)+)", out).group(1).splitlines()
    assert len(listed) == 11 and listed[0] == "  depthNet.3.0.1.0.1.1.running_mean"


@pytest.mark.parametrize(
    "args, message",
    [
        (["weights", "verify", "missing.pth"], "checkpoint not found: missing.pth"),
        (["weights", "init", "--width", "1.5", "-o", "x.pth"], "--width must be above 0 and at most 1, got 1.5"),
        (["weights", "init", "--width", "0.25", "--seed", "-3", "-o", "x.pth"], "--seed must lie in 0..4294967295"),
        (["weights", "download", "--url", "http://127.0.0.1:1/x", "--sha256", "abc"], "--sha256 must be 64"),
        (["weights", "download", "--url", "file:///etc/passwd", "--sha256", "0" * 64], "only http:// and https://"),
    ],
)
def test_user_mistakes_are_one_line(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dainrt: error: ") and message in err
    assert not (tmp_path / "x.pth").exists()


def test_not_a_checkpoint_subprocess(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello")
    res = run_cli("weights", "verify", str(path))
    assert res.returncode == 2
    assert res.stderr == f"dainrt: error: {path} is not a readable PyTorch checkpoint (unrecognised contents)\n"


# ----------------------------------------------------------------------------------------------
# Resolution order


def test_cache_dir_order(monkeypatch, tmp_path):
    assert cache_dir() == tmp_path / "home" / ".cache" / "dainrt"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "dainrt"
    monkeypatch.setenv("DAINRT_CACHE", str(tmp_path / "own"))
    assert cache_dir() == tmp_path / "own"


def test_resolve_order(monkeypatch, tmp_path):
    arg, env, cached = tmp_path / "arg.pth", tmp_path / "env.pth", tmp_path / "cache" / "weights" / "best.pth"
    monkeypatch.setenv("DAINRT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("dainrt.model.weights.default_weights", lambda: None)

    with pytest.raises(DainrtError) as err:
        resolve_weights(None)                              # nothing configured, no bundled model
    text = str(err.value)
    assert "--weights" in text and "DAINRT_WEIGHTS" in text and str(cached) in text
    assert "dainrt weights download" in text and "dainrt weights init" in text and "\n" not in text

    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"c")
    assert resolve_weights(None) == cached                 # cache
    env.write_bytes(b"e")
    monkeypatch.setenv("DAINRT_WEIGHTS", str(env))
    assert resolve_weights(None) == env                    # env beats cache
    arg.write_bytes(b"a")
    assert resolve_weights(arg) == arg                     # argument beats env
    assert resolve_weights(str(arg)) == arg

    with pytest.raises(DainrtError, match=re.escape(f"weights file not found: {tmp_path / 'nope.pth'}")):
        resolve_weights(tmp_path / "nope.pth")             # a given path must exist (no fallback)
    monkeypatch.setenv("DAINRT_WEIGHTS", str(tmp_path / "gone.pth"))
    with pytest.raises(DainrtError, match="DAINRT_WEIGHTS points to a missing file"):
        resolve_weights(None)


def test_bundled_model_comes_last(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("DAINRT_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("DAINRT_WEIGHTS", raising=False)
    assert resolve_weights(None) == BUNDLED_WEIGHTS
    assert "using the bundled default model" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# Download against a loopback server


class _Handler(BaseHTTPRequestHandler):
    """Serves `server.payload` at any path; honours `Range: bytes=N-` when `server.honor_range`."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        srv = self.server
        rng = self.headers.get("Range")
        srv.ranges.append(rng)
        if self.path.endswith("/missing"):
            self.send_error(404)
            return
        data = srv.payload
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and srv.honor_range:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            body = data[start:]
        else:
            self.send_response(200)
            body = data
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.payload = random.Random(42).randbytes(300_000)
    srv.honor_range = True
    srv.ranges = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/best.pth"
    srv.sha256 = hashlib.sha256(srv.payload).hexdigest()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def test_download_full(server, tmp_path):
    out = tmp_path / "w" / "best.pth"
    assert download(server.url, server.sha256.upper(), out, progress=False) == out
    assert out.read_bytes() == server.payload
    assert not Path(str(out) + ".part").exists()
    assert server.ranges == [None]
    # Already there with the right digest: nothing is fetched again.
    assert download(server.url, server.sha256, out, progress=False) == out
    assert server.ranges == [None]


def test_download_resumes_partial(server, tmp_path):
    out = tmp_path / "best.pth"
    part = tmp_path / "best.pth.part"
    part.write_bytes(server.payload[:123_456])
    download(server.url, server.sha256, out, progress=False)
    assert server.ranges == ["bytes=123456-"]
    assert hashlib.sha256(out.read_bytes()).hexdigest() == server.sha256
    assert not part.exists()


def test_download_complete_part_gets_416(server, tmp_path):
    out = tmp_path / "best.pth"
    (tmp_path / "best.pth.part").write_bytes(server.payload)
    download(server.url, server.sha256, out, progress=False)
    assert server.ranges == ["bytes=300000-"] and out.read_bytes() == server.payload


def test_download_server_ignores_range(server, tmp_path):
    server.honor_range = False
    out = tmp_path / "best.pth"
    part = tmp_path / "best.pth.part"
    part.write_bytes(b"\xff" * 50_000)                    # wrong bytes: must be thrown away
    download(server.url, server.sha256, out, progress=False)
    assert server.ranges == ["bytes=50000-"]
    assert out.read_bytes() == server.payload and not part.exists()


def test_download_wrong_hash(server, tmp_path):
    out = tmp_path / "best.pth"
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(DainrtError) as err:
        download(server.url, wrong, out, progress=False)
    assert wrong in str(err.value) and server.sha256 in str(err.value)
    assert not out.exists() and not (tmp_path / "best.pth.part").exists()


def test_download_network_error_keeps_part(tmp_path):
    with socket.socket() as s:                            # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    part = tmp_path / "best.pth.part"
    part.write_bytes(b"x" * 10)
    with pytest.raises(DainrtError, match="download failed: cannot reach .* kept"):
        download(f"http://127.0.0.1:{port}/best.pth", "0" * 64, tmp_path / "best.pth", progress=False)
    assert part.read_bytes() == b"x" * 10 and not (tmp_path / "best.pth").exists()


def test_download_http_error(server, tmp_path):
    url = server.url.replace("best.pth", "missing")
    with pytest.raises(DainrtError, match=re.escape(f"download failed: HTTP 404 Not Found for {url}")):
        download(url, server.sha256, tmp_path / "best.pth", progress=False)
    assert os.listdir(tmp_path) == []


def test_cli_download_to_cache_then_resolve(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAINRT_CACHE", str(tmp_path / "cache"))
    assert main(["weights", "download", "--url", server.url, "--sha256", server.sha256, "--no-progress"]) == 0
    cached = tmp_path / "cache" / "weights" / "best.pth"
    assert capsys.readouterr().out.strip() == str(cached)
    assert cached.read_bytes() == server.payload
    assert resolve_weights(None) == cached

    assert main(["weights", "download", "--url", server.url, "--sha256", "2" * 64, "-o", str(tmp_path / "x.pth")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "SHA-256 mismatch" in err and not (tmp_path / "x.pth").exists()


# ----------------------------------------------------------------------------------------------
# The official checkpoint: git blob id, strict check, into the cache (a loopback mirror)


def test_git_blob_id_is_what_git_computes(tmp_path):
    from dainrt.model.weights import git_blob_id

    f = tmp_path / "x.bin"
    f.write_bytes(random.Random(1).randbytes(70_000))
    git = subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True, check=True).stdout.strip()
    assert git_blob_id(f) == git
    (tmp_path / "empty").write_bytes(b"")
    assert git_blob_id(tmp_path / "empty") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"   # git's empty blob


@pytest.fixture
def official_server(server, tmp_path_factory):
    """The loopback server serving a real (small, width 0.25) dainrt checkpoint, with its blob id."""
    from dainrt.model.checkpoint import save_checkpoint, synthetic_state_dict
    from dainrt.model.weights import git_blob_id

    config = ModelConfig(width=0.25)
    path = save_checkpoint(synthetic_state_dict(config, seed=5), config, tmp_path_factory.mktemp("src") / "best.pth")
    server.payload = path.read_bytes()
    server.blob_id = git_blob_id(path)
    return server


def _official(server, *extra):
    return main(["weights", "download", "--official", "--mirror", server.url, "--blob-id", server.blob_id,
                 "--no-progress", *extra])


def test_official_download_lands_in_the_cache_with_its_sha256(official_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAINRT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DAINRT_WEIGHTS", raising=False)
    assert _official(official_server) == 0
    cached = tmp_path / "cache" / "weights" / "best.pth"
    assert capsys.readouterr().out.strip() == str(cached)
    assert cached.read_bytes() == official_server.payload
    sha = hashlib.sha256(official_server.payload).hexdigest()
    assert (tmp_path / "cache" / "weights" / "best.pth.sha256").read_text() == f"{sha}  best.pth\n"
    assert sorted(p.name for p in cached.parent.iterdir()) == ["best.pth", "best.pth.sha256"]
    assert resolve_weights(None) == cached                       # every command finds it

    assert main(["weights", "verify", str(cached)]) == 0
    out = capsys.readouterr().out
    assert f"sha256: {sha}" in out and f"git blob id: {official_server.blob_id}" in out
    assert "sha256 matches best.pth.sha256" in out
    changed = bytearray(official_server.payload)
    changed[len(changed) // 2] ^= 0xFF
    cached.write_bytes(bytes(changed))                           # changed after the download
    assert main(["weights", "verify", str(cached)]) == 1
    assert "has changed since it was downloaded" in capsys.readouterr().err


def test_official_download_wrong_file_leaves_nothing(official_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAINRT_CACHE", str(tmp_path / "cache"))
    wrong = "1" * 40
    assert main(["weights", "download", "--official", "--mirror", official_server.url, "--blob-id", wrong,
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "git blob id mismatch" in err and wrong in err and official_server.blob_id in err
    assert list((tmp_path / "cache" / "weights").iterdir()) == []


def test_official_download_not_a_checkpoint_leaves_nothing(official_server, tmp_path, monkeypatch, capsys):
    from dainrt.model.weights import git_blob_id

    monkeypatch.setenv("DAINRT_CACHE", str(tmp_path / "cache"))
    official_server.payload = b"not a checkpoint at all" * 100
    (tmp_path / "f").write_bytes(official_server.payload)
    official_server.blob_id = git_blob_id(tmp_path / "f")
    assert _official(official_server) == 2
    assert "not a readable PyTorch checkpoint" in capsys.readouterr().err
    assert list((tmp_path / "cache" / "weights").iterdir()) == []


def test_official_download_resumes(official_server, tmp_path, monkeypatch):
    monkeypatch.setenv("DAINRT_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "cache" / "weights"
    weights.mkdir(parents=True)
    half = len(official_server.payload) // 2
    (weights / ".official-best.pth.part").write_bytes(official_server.payload[:half])
    assert _official(official_server) == 0
    assert official_server.ranges == [f"bytes={half}-"]
    assert (weights / "best.pth").read_bytes() == official_server.payload
