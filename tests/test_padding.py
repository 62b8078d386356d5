import pytest
import torch

from dainrt.model import crop, pad, padded_size, padding_for
from conftest import E2E_CASES, load_golden


@pytest.mark.parametrize(
    "w,h,expected",
    [
        (640, 480, (32, 32, 16, 16)),      # docs/dain-spec.md §2.2 examples
        (1920, 1080, (32, 32, 36, 36)),
        (1280, 720, (32, 32, 24, 24)),
        (3840, 2160, (32, 32, 8, 8)),
        (130, 77, (63, 63, 25, 26)),       # odd size: uneven split, the rest goes after
        (128, 64, (32, 32, 32, 32)),       # multiple of 128 -> 32 + 32
    ],
)
def test_official_rule(w, h, expected):
    assert tuple(padding_for(h, w)) == expected
    ph, pw = padded_size(h, w)
    assert ph % 64 == 0 and pw % 64 == 0


@pytest.mark.parametrize("case", E2E_CASES)
def test_golden_padding_and_input(case):
    z = load_golden(case)
    h, w = z["frame0_u8"].shape[:2]
    p = padding_for(h, w)
    assert list(p) == z["pad_lrtb"].tolist()
    x = torch.from_numpy(z["frame0_u8"]).permute(2, 0, 1)[None].float() / 255.0
    assert torch.equal(pad(x, p), torch.from_numpy(z["input0_padded"]))


@pytest.mark.parametrize("mode", ["official", "mod64"])
@pytest.mark.parametrize("h,w", [(1, 1), (63, 65), (64, 128), (77, 130), (388, 584)])
def test_any_size_round_trips(mode, h, w):
    x = torch.rand(1, 3, h, w)
    p = padding_for(h, w, mode)
    padded = pad(x, p)
    assert padded.shape[-2] % 64 == 0 and padded.shape[-1] % 64 == 0
    assert torch.equal(crop(padded, p), x)
    # Edge replication: the padded border repeats the outermost pixels.
    assert torch.equal(padded[..., p.top, : p.left], x[..., 0, :1].expand(1, 3, p.left))


def test_mod64_is_smaller():
    assert padded_size(1080, 1920, "mod64") == (1088, 1920)
    assert padded_size(1080, 1920) == (1152, 1984)
    with pytest.raises(ValueError):
        padding_for(10, 10, "nearest128")
