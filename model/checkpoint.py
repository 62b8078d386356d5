"""Checkpoints: read, check, write and synthesise DAIN state dicts. No CLI here.

Two file formats, both read with `torch.load(path, map_location="cpu", weights_only=True)`:

* the official `best.pth`: a flat state_dict (key -> tensor) of the full-width network, so it
  means `ModelConfig()` (width 1.0);
* dainrt's own files: `{"format": "dainrt-checkpoint-1", "config": ModelConfig.to_dict(),
  "state_dict": {...}}`, which also carry the width of a narrower model.

Loading is strict (docs/architecture.md §9): every float key of the model must be present with its shape;
unexpected keys are errors. Only missing `*.num_batches_tracked` counters are tolerated: BatchNorm
never reads them in eval mode and some exporters drop them (docs/dain-spec.md §8).
"""
from __future__ import annotations

import functools
import hashlib
import math
import os
import re
import warnings
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dainrt.base.errors import DainrtError
from dainrt.base.files import atomic_output
from .config import ModelConfig
from .dain import DAIN

FORMAT = "dainrt-checkpoint-1"
DATAPARALLEL_PREFIX = "module."
TOLERATED_MISSING_LEAF = "num_batches_tracked"

# Synthetic weights (tests/data/golden/README.md §1.1): conv weight gain per top-level module, exact match on
# the text before the first dot (so `initScaleNets_filter1` is not `initScaleNets_filter`). The
# gains keep every stage of the random network in a sane numeric range on real frames.
GAIN = {
    "depthNet": 1.3,
    "ctxNet": math.sqrt(2.0),
    "flownets": math.sqrt(2.0),
    "initScaleNets_filter": math.sqrt(2.0),
    "initScaleNets_filter1": 0.25,
    "initScaleNets_filter2": 0.25,
    "rectifyNet": 0.35,
}
BIAS_STD = 0.01
# The two kernel heads get a 0.25 bias so each 4x4 kernel sums to about 4 (1 per quadrant).
BIAS_MEAN = {"initScaleNets_filter1.2.bias": 0.25, "initScaleNets_filter2.2.bias": 0.25}
# ConvTranspose2d weights are stored (in, out, kh, kw): their out_channels is shape[1].
TRANSPOSED_PREFIXES = ("flownets.deconv", "flownets.upfeat")


@dataclass(frozen=True)
class _Expected:
    shape: tuple[int, ...]
    dtype: torch.dtype
    is_param: bool


@functools.lru_cache(maxsize=8)
def _expected_keys(config: ModelConfig) -> "OrderedDict[str, _Expected]":
    """Key -> shape/dtype of `DAIN(config).state_dict()`, in state_dict order.

    Built on the meta device (no memory, no random init: ~0.1 s at width 1); a model that cannot
    be built there falls back to the CPU. Cached per config because it never changes.
    """
    try:
        with torch.device("meta"):
            model = DAIN(config)
    except Exception:  # noqa: BLE001 - any meta-device limitation: the CPU build is equivalent
        model = DAIN(config)
    params = {name for name, _ in model.named_parameters()}
    return OrderedDict(
        (k, _Expected(tuple(v.shape), v.dtype, k in params)) for k, v in model.state_dict().items()
    )


def expected_shapes(config: ModelConfig) -> "OrderedDict[str, tuple[int, ...]]":
    """The state_dict keys of `DAIN(config)` and their shapes, in state_dict order."""
    return OrderedDict((k, e.shape) for k, e in _expected_keys(config).items())


# ----------------------------------------------------------------------------------------------
# Reading


def load_checkpoint(path: str | os.PathLike) -> tuple["OrderedDict[str, torch.Tensor]", ModelConfig]:
    """Read a checkpoint file: (state_dict as stored, its ModelConfig). Checks the format only.

    Raises DainrtError (one line) for a missing file, a file torch cannot read (or that holds
    anything but tensors: `weights_only=True` refuses arbitrary pickles) and a file that is not
    a state dict. Use `verify_state_dict` to check keys and shapes against the model.
    """
    path = Path(path)
    if not path.exists():
        raise DainrtError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise DainrtError(f"checkpoint is not a file: {path}")
    try:
        with warnings.catch_warnings():
            # torch warns about e.g. unusual pickle protocols; the outcome is what matters here.
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise DainrtError(f"cannot read checkpoint {path}: {err.strerror or err}") from None
    except Exception as err:  # noqa: BLE001 - torch raises many types for a foreign file
        raise DainrtError(f"{path} is not a readable PyTorch checkpoint ({_load_failure(err, path)})") from None

    if isinstance(obj, Mapping) and "format" in obj:
        if obj["format"] != FORMAT:
            raise DainrtError(f"{path}: unsupported checkpoint format {obj['format']!r} (expected {FORMAT!r})")
        try:
            config = ModelConfig.from_dict(dict(obj.get("config") or {}))
        except (TypeError, ValueError) as err:
            raise DainrtError(f"{path}: bad model config in checkpoint: {err}") from None
        state_dict = obj.get("state_dict")
    else:
        config, state_dict = ModelConfig(), obj   # the official flat file: full width
    _check_is_state_dict(state_dict, path)
    return OrderedDict(state_dict), config


def _load_failure(err: Exception, path: Path) -> str:
    """A short reason for a failed `torch.load` (torch's own messages can be paragraphs)."""
    text = str(err)
    if path.stat().st_size == 0:
        return "the file is empty"
    if "Weights only load failed" in text:
        # weights_only=True refuses pickled objects other than tensors and plain containers.
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        return "it holds Python objects other than tensors" + (f": {detail.group(1).strip()[:120]}" if detail else "")
    if isinstance(err, (KeyError, EOFError)):
        # The legacy (non-zip) reader looks the first pickle opcode up in a table: a KeyError
        # means the bytes are not a pickle at all; EOFError means the file is cut short.
        return "unrecognised contents" if isinstance(err, KeyError) else "the file is truncated"
    first = (text.strip().splitlines() or [""])[0][:160]
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _check_is_state_dict(obj, path: Path) -> None:
    if not isinstance(obj, Mapping) or not obj:
        what = "an empty dict" if isinstance(obj, Mapping) else type(obj).__name__
        raise DainrtError(f"{path} is not a DAIN state dict (it holds {what})")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        shown = ", ".join(repr(k) for k in bad[:3])
        raise DainrtError(f"{path} is not a DAIN state dict ({len(bad)} entries are not named tensors, e.g. {shown})")


def normalize_keys(state_dict: Mapping[str, torch.Tensor]) -> tuple["OrderedDict[str, torch.Tensor]", list[str]]:
    """Strip a `module.` prefix that is on *every* key (files saved from nn.DataParallel).

    Returns (state_dict, notes); notes say what was changed. A prefix on only some keys is left
    alone: those keys are then reported as unexpected.
    """
    keys = list(state_dict)
    if keys and all(k.startswith(DATAPARALLEL_PREFIX) for k in keys):
        n = len(DATAPARALLEL_PREFIX)
        note = f"stripped the '{DATAPARALLEL_PREFIX}' prefix from all {len(keys)} keys (DataParallel file)"
        return OrderedDict((k[n:], v) for k, v in state_dict.items()), [note]
    return OrderedDict(state_dict), []


# ----------------------------------------------------------------------------------------------
# Verifying


@dataclass
class VerifyReport:
    """How a state dict compares with `DAIN(config).state_dict()`.

    missing: required keys absent from the file (every float key); unexpected: keys the model
    does not have; mismatched: (key, expected_shape, got_shape); tolerated: absent
    `*.num_batches_tracked` counters (fine); param_count: elements of the file's tensors that
    are model parameters (24,031,656 for a complete width-1 file); notes: key rewrites applied;
    config: the model it was compared with.
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...] | None]] = field(default_factory=list)
    tolerated: list[str] = field(default_factory=list)
    param_count: int = 0
    notes: list[str] = field(default_factory=list)
    config: ModelConfig = field(default_factory=ModelConfig)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 3) -> str:
        """One line naming the first `limit` offending keys of each kind, e.g. for an error."""
        parts = []
        for what, items in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("mis-shaped", [f"{k} (expected {list(e)}, got {_shape_text(g)})" for k, e, g in self.mismatched]),
        ):
            if items:
                more = f", ... {len(items) - limit} more" if len(items) > limit else ""
                parts.append(f"{len(items)} {what}: " + ", ".join(items[:limit]) + more)
        return "; ".join(parts) if parts else "ok"


def _shape_text(shape) -> str:
    return "not a tensor" if shape is None else str(list(shape))


def verify_state_dict(state_dict: Mapping[str, torch.Tensor], config: ModelConfig) -> VerifyReport:
    """Compare keys and shapes of `state_dict` with `DAIN(config)`; never raises for a bad dict.

    A `module.` prefix on every key is stripped first (noted in `report.notes`).
    """
    state_dict, notes = normalize_keys(state_dict)
    expected = _expected_keys(config)
    report = VerifyReport(config=config, notes=notes)
    for key, exp in expected.items():
        if key not in state_dict:
            if key.rsplit(".", 1)[-1] == TOLERATED_MISSING_LEAF:
                report.tolerated.append(key)
            else:
                report.missing.append(key)
            continue
        value = state_dict[key]
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else None
        if got != exp.shape:
            report.mismatched.append((key, exp.shape, got))
        elif exp.is_param:
            report.param_count += value.numel()
    report.unexpected = [k for k in state_dict if k not in expected]
    return report


# ----------------------------------------------------------------------------------------------
# Loading a model


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> DAIN:
    """A DAIN with the checkpoint's weights and width, in eval mode, on `device`.

    Raises DainrtError naming the first offending keys when the file does not match the model.
    """
    state_dict, config = load_checkpoint(path)
    report = verify_state_dict(state_dict, config)
    if not report.ok:
        raise DainrtError(
            f"{path} does not match the DAIN model (width {config.width}): {report.summary()}; "
            f"run `dainrt weights verify {path}` for the full list"
        )
    state_dict, _ = normalize_keys(state_dict)
    # Absent counters are unused in eval; fill them so the load itself can stay strict.
    for key in report.tolerated:
        state_dict[key] = torch.zeros((), dtype=torch.int64)
    model = DAIN(config)
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    try:
        return model.to(device)
    except (RuntimeError, AssertionError, ValueError) as err:
        # e.g. "cuda" on a CPU-only torch build (AssertionError) or a malformed device string.
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DainrtError(f"cannot use device {str(device)!r}: {first}") from None


# ----------------------------------------------------------------------------------------------
# Writing


def save_checkpoint(
    model_or_state_dict: torch.nn.Module | Mapping[str, torch.Tensor],
    config: ModelConfig | None,
    path: str | os.PathLike,
) -> Path:
    """Write a dainrt-format checkpoint atomically; returns the path.

    `config` may be None for a module that has a `.config`. The file appears under its final
    name only when complete (temp file in the same folder, then `os.replace`), so an interrupted
    save never leaves a truncated checkpoint behind. Parent folders are created.
    """
    if isinstance(model_or_state_dict, torch.nn.Module):
        config = config or getattr(model_or_state_dict, "config", None)
        state_dict = model_or_state_dict.state_dict()
    else:
        state_dict = model_or_state_dict
    if not isinstance(config, ModelConfig):
        raise TypeError("save_checkpoint needs a ModelConfig")
    payload = {
        "format": FORMAT,
        "config": config.to_dict(),
        "state_dict": OrderedDict((k, v.detach().cpu()) for k, v in state_dict.items()),
    }
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:
            torch.save(payload, tmp)
    except OSError as err:
        raise DainrtError(f"cannot write checkpoint {path}: {err.strerror or err}") from None
    return path


# ----------------------------------------------------------------------------------------------
# Synthetic weights (tests/data/golden/README.md §1)


def _synthetic_tensor(key: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """One tensor of the recipe: its own CPU generator, one float64 draw, scale/shift, float32."""
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return torch.zeros(shape, dtype=torch.int64)  # no draw
    g = torch.Generator(device="cpu")
    g.manual_seed(zlib.crc32(key.encode("utf-8")) ^ seed)
    # float64 on purpose: float32 randn has a vectorised path whose last bits depend on the CPU.
    f64 = torch.float64
    if leaf == "running_mean":
        t = torch.randn(shape, generator=g, dtype=f64) * 0.1
    elif leaf == "running_var":
        t = torch.rand(shape, generator=g, dtype=f64) + 0.5       # uniform in [0.5, 1.5)
    elif len(shape) == 4:                                          # Conv2d / ConvTranspose2d weight
        out_ch = shape[1] if key.startswith(TRANSPOSED_PREFIXES) else shape[0]
        fan = math.prod(shape) // out_ch
        t = torch.randn(shape, generator=g, dtype=f64) * (GAIN[key.split(".", 1)[0]] / math.sqrt(fan))
    elif leaf == "weight":                                         # 1-D: the affine BatchNorm depthNet.1
        t = torch.randn(shape, generator=g, dtype=f64) * 0.1 + 1.0
    elif leaf == "bias":
        t = torch.randn(shape, generator=g, dtype=f64) * BIAS_STD + BIAS_MEAN.get(key, 0.0)
    else:
        raise KeyError(f"no synthetic-weight rule for {key}")
    return t.to(torch.float32)


def synthetic_state_dict(config: ModelConfig = ModelConfig(), seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """Deterministic random weights for `DAIN(config)` (tests/data/golden/README.md §1.1, generalised).

    Each key draws from its own CPU generator seeded with `crc32(key) ^ seed`, so the values do
    not depend on the CPU, the torch build or the other keys. Width 1.0 with seed 0 is exactly
    the golden checkpoint (fingerprint sha256 8c180dc4...8157b). `seed` is an int in [0, 2**32).
    """
    if not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    return OrderedDict((k, _synthetic_tensor(k, shape, seed)) for k, shape in expected_shapes(config).items())


def fingerprint(state_dict: Mapping[str, torch.Tensor]) -> tuple[str, "OrderedDict[str, list]"]:
    """(sha256 hex, per_key) of a state dict, as in tests/data/golden/README.md §1.1.

    The digest covers, for every key in order, `key utf-8 + b"\\0" + raw little-endian tensor
    bytes`; per_key[key] = [first 16 hex of sha256(tensor bytes), float64 sum, first value].
    """
    h = hashlib.sha256()
    per_key: OrderedDict[str, list] = OrderedDict()
    for key, value in state_dict.items():
        raw = value.detach().cpu().contiguous().numpy().tobytes()
        h.update(key.encode("utf-8") + b"\0" + raw)
        first = float(value.reshape(-1)[0]) if value.numel() else float("nan")
        per_key[key] = [hashlib.sha256(raw).hexdigest()[:16], float(value.double().sum()), first]
    return h.hexdigest(), per_key
