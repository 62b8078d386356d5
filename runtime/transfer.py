"""Moving pictures between the host and the inference device.

On the CPU this is only the conversion of the model's float output to 8/16-bit RGB. On CUDA,
uploads run on their own stream from pinned host memory (issued by the decode thread, ahead of
use), downloads on another stream into pinned buffers (waited for by the encode thread), so
copies overlap the compute stream. The compute stream waits on an upload's event before it
reads the frame, and the download stream on a compute event before it copies a result.

`quantize` is the one conversion of a model output to integers: clamp to [0, 1], scale to
255 (or 65535), round half to even (as `dainrt.images.to_dtype`).
"""
from __future__ import annotations

import numpy as np
import torch


def quantize(frame: torch.Tensor, dtype) -> torch.Tensor:
    """(3,H,W) float -> (H,W,3) integer tensor on the same device (uint8, or int32 for 16-bit)."""
    scale = 255.0 if np.dtype(dtype) == np.uint8 else 65535.0
    q = torch.round(frame.clamp(0.0, 1.0) * scale)
    q = q.to(torch.uint8) if scale == 255.0 else q.to(torch.int32)
    return q.permute(1, 2, 0).contiguous()


def to_numpy(q: torch.Tensor, dtype) -> np.ndarray:
    arr = q.numpy()
    return arr if arr.dtype == np.dtype(dtype) else arr.astype(dtype)


class Uploaded:
    """A frame on its way to the GPU; `get()` (compute thread) makes the current stream wait."""

    def __init__(self, tensor: torch.Tensor, event):
        self.tensor, self.event = tensor, event

    def get(self) -> torch.Tensor:
        stream = torch.cuda.current_stream(self.tensor.device)
        stream.wait_event(self.event)
        self.tensor.record_stream(stream)
        return self.tensor


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
        if image.dtype == np.uint16:          # the runner reads uint16 as /65535: do it on the host
            image = image.astype(np.float32) / 65535.0
        host = torch.from_numpy(np.ascontiguousarray(image)).pin_memory()
        with torch.cuda.stream(self.upload_stream):
            dev = host.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self.upload_stream)
        return Uploaded(dev, event)

    def image(self, uploaded):
        """Compute thread: what to hand to `Runner.interpolate` for an uploaded frame."""
        return uploaded.get() if isinstance(uploaded, Uploaded) else uploaded

    def download(self, frame: torch.Tensor):
        """Compute thread: a model output (3,H,W) float -> numpy RGB (or a pending `Download`)."""
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
