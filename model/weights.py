"""Where weights come from: resolution (argument, environment, cache) and a resumable download.

Resolution order (docs/architecture.md §9): an explicit path (`--weights PATH`), then `$DAINRT_WEIGHTS`, then
`<cache>/weights/best.pth` if present, then the bundled default model (`model/data`).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, NamedTuple

from dainrt.base.errors import DainrtError, OptionError
from dainrt.base.files import atomic_write, sha256_file
from dainrt.base.outputs import check_outputs
from dainrt.base.paths import cache_dir

ENV_WEIGHTS = "DAINRT_WEIGHTS"
CHUNK = 1 << 20          # bytes per read while downloading (1 MiB)
TIMEOUT_S = 30.0         # socket timeout per connect / read, seconds


def cached_weights_path() -> Path:
    """Where `dainrt weights download` puts the official checkpoint by default."""
    return cache_dir() / "weights" / "best.pth"


BUNDLED_WEIGHTS = Path(__file__).parent / "data" / "default_model.pth"


def default_weights() -> Path | None:
    """The model shipped inside the package (see model/data/MODEL_CARD.md), None if absent."""
    return BUNDLED_WEIGHTS if BUNDLED_WEIGHTS.is_file() else None


def resolve_weights(weights: str | os.PathLike | None = None) -> Path:
    """The checkpoint to use: `weights`, else `$DAINRT_WEIGHTS`, else the cached `best.pth`,
    else `default_weights()`. Raises DainrtError naming the path when a given one is missing,
    and explaining the three ways when none is configured.
    """
    if weights is not None and str(weights) != "":
        return _existing(Path(weights).expanduser(), "weights file not found")
    env = os.environ.get(ENV_WEIGHTS)
    if env:
        return _existing(Path(env).expanduser(), f"${ENV_WEIGHTS} points to a missing file")
    cached = cached_weights_path()
    if cached.is_file():
        return cached
    bundled = default_weights()
    if bundled is not None:
        print("dainrt: using the bundled default model (model/data/MODEL_CARD.md); --weights PATH picks another",
              file=sys.stderr)
        return bundled
    raise DainrtError(
        f"no model weights: pass --weights PATH, set {ENV_WEIGHTS}=PATH, or put the checkpoint at "
        f"{cached} (`dainrt weights download --official` fetches the official one there; "
        f"`dainrt weights init -o PATH` writes random test weights)"
    )


def _existing(path: Path, problem: str) -> Path:
    if not path.exists():
        raise DainrtError(f"{problem}: {path}")
    if not path.is_file():
        raise DainrtError(f"weights path is not a file: {path}")
    return path


# ----------------------------------------------------------------------------------------------
# Download

# The official DAIN checkpoint. Its original host is dead; a copy is in the public
# BurguerJohn/Dain-App repository, identified by its git blob id (SHA-1 of b"blob <size>\0" and
# the bytes), which anyone can check against the repository's own tree.
OFFICIAL_URL = "https://raw.githubusercontent.com/BurguerJohn/Dain-App/master/model_weights/best.pth"
OFFICIAL_BLOB_ID = "8ce43dbd696a63a7cd0caac8a4aacb1264ef3899"


class Digest(NamedTuple):
    """What a downloaded file must hash to: `name` for messages, `hex` expected, `of(path)`."""

    name: str
    hex: str
    of: Callable[[Path], str]


def check_sha256(sha256: str) -> str:
    """The digest in lower case; OptionError unless it is 64 hex characters."""
    if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", sha256.strip()):
        raise OptionError("sha256", f"must be 64 hexadecimal characters, got {sha256!r}")
    return sha256.strip().lower()


def git_blob_id(path: str | os.PathLike) -> str:
    """The git blob id of a file: SHA-1 hex of b"blob <size>\0" followed by its bytes."""
    path = Path(path)
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _digest(sha256: str | None, blob_id: str | None) -> Digest:
    if (sha256 is None) == (blob_id is None):
        raise DainrtError("a download needs exactly one expected digest: a SHA-256 or a git blob id")
    if sha256 is not None:
        return Digest("SHA-256", check_sha256(sha256), sha256_file)
    if not isinstance(blob_id, str) or not re.fullmatch(r"[0-9a-fA-F]{40}", blob_id.strip()):
        raise OptionError("blob_id", f"must be 40 hexadecimal characters, got {blob_id!r}")
    return Digest("git blob id", blob_id.strip().lower(), git_blob_id)


def download(url: str, sha256: str | None, out: str | os.PathLike, progress: bool = True,
             blob_id: str | None = None, overwrite: bool = False) -> Path:
    """Fetch `url` to `out` over HTTP(S), resumable, and check its digest; returns `out`.

    The file must hash to `sha256` or, instead, have the git blob id `blob_id`. Bytes go to
    `out + ".part"`. An existing .part is resumed with `Range: bytes=N-` (206: append; 200: the
    server ignored the range, start over). `out` appears (atomic `os.replace`) only when the whole
    file has the expected digest; a mismatch deletes the .part and raises DainrtError with both
    digests. Network errors raise DainrtError and keep the .part, so the same call resumes. An
    `out` that already has the right digest is kept without a download; one with another digest
    is replaced only with `overwrite`.
    """
    expect = _digest(sha256, blob_id)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise DainrtError(f"only http:// and https:// URLs can be downloaded, got {url!r}")
    out = Path(out).expanduser()
    if out.is_dir():
        raise OptionError("out", f"{out} is a folder; give the file name, e.g. {out / 'best.pth'}")
    part = out.with_name(out.name + ".part")
    try:
        if out.is_file() and expect.of(out) == expect.hex:
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DainrtError(f"cannot use {out}: {err.strerror or err}") from None
    # An existing file of another digest is replaced only with `overwrite`; checked (with the
    # folder's write permission) before anything is fetched.
    check_outputs([("out", out)], overwrite=overwrite, make_folders=True)

    if not _fetch(url, part, progress) and expect.of(part) != expect.hex:
        # The server refused our range (416) and the .part is not the file (stale, or longer
        # than the file): throw it away and download from the start.
        part.unlink()
        _fetch(url, part, progress)
    got = expect.of(part)
    if got != expect.hex:
        part.unlink(missing_ok=True)
        raise DainrtError(f"{expect.name} mismatch for {url}: expected {expect.hex}, got {got}; "
                          f"the download was deleted")
    os.replace(part, out)
    return out


def download_official(url: str = OFFICIAL_URL, blob_id: str = OFFICIAL_BLOB_ID, progress: bool = True) -> Path:
    """The official checkpoint into the weights cache, where every command finds it.

    Downloaded (resumable) beside its final place, checked by its git blob id, then by the strict
    key and shape check of `model.checkpoint`; only then moved to `cached_weights_path()`, with
    its SHA-256 recorded in `best.pth.sha256` beside it (`weights verify` compares both).
    """
    from .checkpoint import load_checkpoint, verify_state_dict

    final = cached_weights_path()
    staging = final.with_name(f".official-{final.name}")
    download(url, None, staging, progress, blob_id=blob_id)
    try:
        state_dict, config = load_checkpoint(staging)
        report = verify_state_dict(state_dict, config)
        if not report.ok:
            raise DainrtError(f"{url} has the expected git blob id but is not a DAIN checkpoint: {report.summary()}")
    except DainrtError:
        staging.unlink(missing_ok=True)     # never leave a file that failed the check where it could be used
        raise
    sha256 = sha256_file(staging)
    try:
        atomic_write(sha256_record(final), f"{sha256}  {final.name}\n")
        os.replace(staging, final)
    except OSError as err:
        raise DainrtError(f"cannot write {final}: {err.strerror or err}") from None
    return final


def sha256_record(path: Path) -> Path:
    """`best.pth` -> `best.pth.sha256`, the SHA-256 recorded when the file was downloaded."""
    return path.with_name(path.name + ".sha256")


def _fetch(url: str, part: Path, progress: bool) -> bool:
    """Complete `part` from `url` (resuming it if present). False when the server answers 416 to
    our range request (nothing to append), True otherwise."""
    from tqdm import tqdm

    from dainrt.base import __version__

    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": f"dainrt/{__version__}"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    def kept() -> str:
        """What to say about the .part after a failure: kept only if it holds something."""
        try:
            if part.is_file() and part.stat().st_size > 0:
                return f"; the partial download {part} is kept: run the same command again to resume"
        except OSError:
            pass
        return ""

    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            return False
        raise DainrtError(f"download failed: HTTP {err.code} {err.reason} for {url}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        reason = getattr(err, "reason", None) or str(err) or type(err).__name__
        raise DainrtError(f"download failed: cannot reach {url} ({reason})" + (kept() if offset else "")) from None

    with response:
        start = _resume_start(response, offset, part)
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        try:
            with open(part, "r+b" if start else "wb") as f:
                f.seek(start)
                f.truncate()
                bar = tqdm(
                    total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=part.name.removesuffix(".part"), disable=not (progress and sys.stderr.isatty()),
                )
                with bar:
                    while block := response.read(CHUNK):
                        f.write(block)
                        bar.update(len(block))
                f.flush()
                os.fsync(f.fileno())
                size = f.tell()
        except (OSError, http.client.HTTPException) as err:
            # A socket error mid-stream (timeout, reset) or a full disk: keep what we have.
            raise DainrtError(f"download interrupted: {getattr(err, 'strerror', None) or err}{kept()}") from None
    if total is not None and size != total:
        raise DainrtError(f"download incomplete: got {size} of {total} bytes from {url}{kept()}")
    return True


def _resume_start(response, offset: int, part: Path) -> int:
    """Byte offset at which the response body starts: `offset` for a matching 206, else 0."""
    if response.status != 206:
        return 0                     # 200: the server sent the whole file, start over
    m = re.match(r"bytes\s+(\d+)-", response.headers.get("Content-Range", ""))
    if m and int(m.group(1)) != offset:
        # A confused server; the .part cannot be continued, so the next run starts afresh.
        part.unlink(missing_ok=True)
        raise DainrtError(
            f"download failed: asked the server for bytes from {offset}, it sent bytes from "
            f"{m.group(1)}; the partial download was deleted, run the same command again"
        )
    return offset
