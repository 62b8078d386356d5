"""Moving pictures between the host and the inference device.

The runner takes (3,H,W) float32 tensors in [0,1] on its device; pictures on the host are
HxWx3 uint8 or uint16. `to_tensor` is the one conversion in (value / peak of the type, the rule
of `dainrt.base.images.PEAK`), `quantize` the one conversion out: clamp to [0, 1], scale by the
peak, round half to even (as `dainrt.base.images.to_dtype`).

On CUDA, uploads run on their own stream from pinned host memory (issued by the decode thread,
ahead of use; 8-bit pictures travel as bytes and are converted on the device), downloads on another
stream into pinned buffers (waited for by the encode thread), so copies overlap the compute
stream. The compute stream waits on an upload's event before it reads the frame, and the
download stream on a compute event before it copies a result.

Alpha (RGBA pictures, HxWx4): `premultiply` gives the model colour premultiplied by alpha (a
transparent pixel is black whatever its stored colour, so no hidden colour bleeds into the
edges) and the alpha apart; `unpremultiply` divides the interpolated colour by the
interpolated alpha again. Both are warped with the same flows and kernels, so an edge pixel's
colour is the alpha-weighted mean of what lands there: no dark fringe.
"""
from __future__ import annotations

import numpy as np
import torch

from dainrt.base.images import peak_of


def to_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """HxWx3 RGB or HxWx4 RGBA (uint8, uint16, or float in [0,1]; numpy or torch, any device)
    -> (3 or 4,H,W) float32 in [0,1] on the same device."""
    if isinstance(image, np.ndarray):
        # torch does not wrap read-only or negatively strided memory: those are copied.
        t = torch.from_numpy(np.ascontiguousarray(image) if image.flags.writeable else image.copy())
    else:
        t = image
    if t.ndim != 3 or t.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 RGB or HxWx4 RGBA image, got shape {tuple(t.shape)}")
    t = t.to(torch.float32) if t.is_floating_point() else t.to(torch.float32) / peak_of(t.dtype)
    return t.permute(2, 0, 1).contiguous()


# Below this alpha (half an 8-bit step) a pixel counts as fully transparent: its colour is 0.
TRANSPARENT = 0.5 / 255


def premultiply(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(4,H,W) straight RGBA in [0,1] -> ((3,H,W) colour x alpha, (1,H,W) alpha)."""
    alpha = image[3:4]
    return (image[:3] * alpha).contiguous(), alpha.contiguous()


def unpremultiply(colour: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """(3,H,W) premultiplied colour and (1,H,W) alpha (not clamped) -> (4,H,W) straight RGBA,
    alpha clamped to [0,1], colour = colour / alpha clamped to [0,1] (0 where transparent)."""
    a = alpha.clamp(0.0, 1.0)
    solid = a > TRANSPARENT
    straight = torch.where(solid, colour / torch.where(solid, a, torch.ones_like(a)), torch.zeros_like(colour))
    return torch.cat((straight.clamp(0.0, 1.0), a), dim=0)


def quantize(frame: torch.Tensor, dtype) -> torch.Tensor:
    """(C,H,W) float -> (H,W,C) integer tensor on the same device (uint8, or int32 for 16-bit)."""
    peak = peak_of(np.dtype(dtype))
    q = torch.round(frame.clamp(0.0, 1.0) * peak)
    q = q.to(torch.uint8) if peak == 255.0 else q.to(torch.int32)
    return q.permute(1, 2, 0).contiguous()


def to_numpy(q: torch.Tensor, dtype) -> np.ndarray:
    arr = q.numpy()
    return arr if arr.dtype == np.dtype(dtype) else arr.astype(dtype)


class Uploaded:
    """A frame on its way to the GPU; `get()` (compute thread) makes the current stream wait."""

    def __init__(self, tensor: torch.Tensor, event):
        self.tensor, self.event = tensor, event

    def get(self) -> torch.Tensor:
        """The frame as the runner takes it: (3,H,W) float32 on the device."""
        stream = torch.cuda.current_stream(self.tensor.device)
        stream.wait_event(self.event)
        self.tensor.record_stream(stream)
        return to_tensor(self.tensor)


class Download:
    """A result on its way to the host; `result()` (encode thread) waits for the copy."""

    def __init__(self, host: torch.Tensor, event, dtype):
        self.host, self.event, self.dtype = host, event, dtype

    def result(self) -> np.ndarray:
        self.event.synchronize()
        return to_numpy(self.host, self.dtype)


class Transfers:
    """Host <-> device for pictures of numpy dtype `dtype` (uint8 or uint16) on `device`."""

    def __init__(self, device: torch.device, dtype):
        self.device = torch.device(device)
        self.dtype = np.dtype(dtype)
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            self.upload_stream = torch.cuda.Stream(self.device)
            self.download_stream = torch.cuda.Stream(self.device)

    def upload(self, image: np.ndarray):
        """Decode thread: start copying `image` to the device (CPU: returned as it is)."""
        if not self.cuda:
            return image
        if image.dtype == np.uint16:
            # CUDA kernels for uint16 tensors are few: 16-bit pictures travel as [0,1] floats.
            image = image.astype(np.float32) / peak_of(image.dtype)
        host = torch.from_numpy(np.ascontiguousarray(image)).pin_memory()
        with torch.cuda.stream(self.upload_stream):
            dev = host.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self.upload_stream)
        return Uploaded(dev, event)

    def image(self, uploaded) -> torch.Tensor:
        """Compute thread: the (3,H,W) float32 device tensor `Runner.interpolate` takes ((4,H,W)
        for RGBA: see `premultiply`)."""
        return uploaded.get() if isinstance(uploaded, Uploaded) else to_tensor(uploaded)

    def download(self, frame: torch.Tensor):
        """Compute thread: a model output (3 or 4,H,W) float -> numpy RGB(A) (or a pending `Download`)."""
        q = quantize(frame, self.dtype)
        if not self.cuda:
            return to_numpy(q, self.dtype)
        compute = torch.cuda.current_stream(self.device)
        ready = torch.cuda.Event()
        ready.record(compute)
        host = torch.empty(q.shape, dtype=q.dtype, pin_memory=True)
        with torch.cuda.stream(self.download_stream):
            self.download_stream.wait_event(ready)
            host.copy_(q, non_blocking=True)
            q.record_stream(self.download_stream)
            done = torch.cuda.Event()
            done.record(self.download_stream)
        return Download(host, done, self.dtype)
