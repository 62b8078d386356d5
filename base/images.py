"""Reading and writing still pictures: 8-bit and 16-bit RGB, with alpha dropped (and said so);
greyscale is read as RGB (three equal channels, its own depth) and can be written back as grey.

Arrays are HxWx3 RGB: uint8 for 8-bit files, uint16 for 16-bit ones. Pillow reads and writes
8-bit pictures; it narrows 16-bit RGB to 8 bits, so 16-bit PNGs go through FFmpeg's PNG codec
(PyAV) instead.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from .errors import DainrtError
from .files import atomic_output

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# The one rule between integer pictures and [0,1] floats: value / peak of the integer type.
PEAK = {"uint8": 255.0, "uint16": 65535.0}


def peak_of(dtype) -> float:
    """255 for uint8, 65535 for uint16 (numpy or torch dtypes); ValueError for other types."""
    name = str(dtype).removeprefix("torch.")
    if name not in PEAK:
        raise ValueError(f"pictures are uint8 or uint16, got {name}")
    return PEAK[name]


def _png_header(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR, None for other files."""
    with open(path, "rb") as f:
        head = f.read(26)
    return (head[24], head[25]) if head[:8] == _PNG_SIGNATURE and len(head) == 26 else None


def _png_bit_depth(path: Path) -> int | None:
    header = _png_header(path)
    return header[0] if header else None


def is_greyscale(path: str | os.PathLike) -> bool:
    """Whether the picture file holds grey levels only (with or without alpha), of any depth."""
    path = Path(path)
    header = _png_header(path)
    if header is not None:
        return header[1] in (0, 4)          # PNG colour types 0 (grey) and 4 (grey + alpha)
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
    except Exception:  # noqa: BLE001 - read_image reports unreadable files
        return False


def _decode_png16(path: Path) -> np.ndarray:
    import av

    codec = av.CodecContext.create("png", "r")
    data = path.read_bytes()
    frames = [fr for pkt in codec.parse(data) for fr in codec.decode(pkt)] + list(codec.decode(None))
    if not frames:
        raise DainrtError(f"cannot decode {path}: not a valid PNG")
    return frames[0].to_ndarray(format="rgb48le")    # alpha, if any, is dropped here


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a picture as HxWx3 RGB (uint8, or uint16 for 16-bit PNGs). Alpha is dropped with a
    warning; greyscale and palette pictures are converted to RGB."""
    path = Path(path)
    if path.is_dir():
        raise DainrtError(f"cannot read {path}: it is a folder, not a picture")
    if not path.is_file():
        raise DainrtError(f"cannot read {path}: no such file")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            mode = img.mode
            has_alpha = "A" in img.getbands() or "transparency" in img.info
            if _png_bit_depth(path) == 16:
                # FFmpeg's decoder keeps all 16 bits of RGB and grey (Pillow's RGB conversion of a
                # 16-bit grey picture clips it to 8 bits: nearly white)
                array = _decode_png16(path)
            else:
                array = np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DainrtError(f"cannot read {path}: not a picture Pillow understands ({err})") from None
    if has_alpha:
        warnings.warn(f"{path.name}: alpha channel dropped (DAIN interpolates RGB only)", stacklevel=2)
    return np.ascontiguousarray(array)


def to_dtype(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float RGB in [0,1] -> uint8 or uint16, clipped and rounded half-to-even (as the official demo)."""
    return np.round(np.clip(image, 0.0, 1.0) * peak_of(np.dtype(dtype))).astype(dtype)


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write HxWx3 RGB, HxWx4 RGBA or HxW grey, uint8 or uint16, as a picture (16-bit only as
    PNG); atomic (temp + rename)."""
    path = Path(path)
    if image.dtype == np.uint16 and path.suffix.lower() != ".png":
        raise DainrtError(f"{path}: 16-bit output needs a .png name")
    try:
        with atomic_output(path) as tmp:
            if image.dtype == np.uint16:
                _encode_png16(tmp, image)
            else:
                from PIL import Image

                Image.fromarray(image).save(tmp, format=_pil_format(path))
    except OSError as err:
        raise DainrtError(f"cannot write {path}: {err.strerror or err}") from None


def _pil_format(path: Path) -> str:
    from PIL import Image

    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise DainrtError(f"{path}: unknown picture extension {path.suffix!r} (use .png)")
    return fmt


def _encode_png16(path: Path, image: np.ndarray) -> None:
    import av

    h, w = image.shape[:2]
    codec = av.CodecContext.create("png", "w")
    grey = image.ndim == 2
    rgba = image.ndim == 3 and image.shape[2] == 4
    codec.width, codec.height = w, h
    codec.pix_fmt = "gray16be" if grey else "rgba64be" if rgba else "rgb48be"
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image),
                                       format="gray16le" if grey else "rgba64le" if rgba else "rgb48le")
    frame = frame.reformat(format=codec.pix_fmt)
    packets = codec.encode(frame) + codec.encode(None)
    path.write_bytes(b"".join(bytes(p) for p in packets))
