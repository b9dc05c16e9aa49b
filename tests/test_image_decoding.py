"""Images decoded as they are meant to be seen (``records.decode_rgb``): what a policy and
a PRM are shown must be the picture ``datasets`` shows when it loads the output."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from prmtree.engine.records import ProblemImage, decode_rgb


def _encoded(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_a_high_bit_depth_image_is_scaled_to_8_bits_not_clipped_white(mode):
    # Before: convert("RGB") clipped a 16-bit ramp: 99.6% of a real scan's pixels were 255.
    ramp = np.tile(np.linspace(0, 65535, 256), (4, 1))
    pixels = {"I;16": ramp.astype(np.uint16), "I": ramp.astype(np.int32), "F": (ramp / 65535).astype(np.float32)}[mode]
    data = _encoded(Image.fromarray(pixels), "PNG" if mode == "I;16" else "TIFF")
    assert Image.open(io.BytesIO(data)).mode == mode
    got = np.asarray(decode_rgb(data))
    assert got.shape == (4, 256, 3) and got.dtype == np.uint8
    assert (got == 255).mean() < 0.01 and len(np.unique(got[..., 0])) > 200
    assert got[0, 0, 0] == 0 and got[0, -1, 0] == 255 and abs(int(got[0, 128, 0]) - 128) <= 1


def test_an_exif_orientation_is_applied_as_datasets_applies_it(tmp_path):
    import datasets

    image = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to show
    data = _encoded(image, "JPEG", exif=exif.tobytes())
    assert ProblemImage(data).to_pil().size == (20, 40)
    ds = datasets.Dataset.from_dict({"image": [{"bytes": data, "path": None}]}).cast_column("image", datasets.Image())
    assert ds[0]["image"].size == decode_rgb(data).size  # the same picture as the output's readers


def test_an_8_bit_image_decodes_as_before():
    data = _encoded(Image.new("RGB", (3, 2), (10, 20, 30)))
    assert decode_rgb(data).getpixel((0, 0)) == (10, 20, 30)
    palette = _encoded(Image.new("P", (3, 2), 1))
    assert decode_rgb(palette).mode == "RGB"


def test_an_openai_request_sends_the_bytes_as_given_unless_a_server_would_misread_them():
    import base64

    from prmtree.policies.prompts import data_url

    plain = _encoded(Image.new("RGB", (3, 2), "blue"))
    assert data_url(ProblemImage(plain)) == "data:image/png;base64," + base64.b64encode(plain).decode()
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = ProblemImage(_encoded(Image.new("RGB", (40, 20), "red"), "JPEG", exif=exif.tobytes()))
    tiff = ProblemImage(_encoded(Image.new("RGB", (5, 4), "red"), "TIFF"))
    deep = ProblemImage(_encoded(Image.fromarray(np.full((2, 2), 40000, np.uint16))))
    for image, size in ((rotated, (20, 40)), (tiff, (5, 4)), (deep, (2, 2))):
        url = data_url(image)
        assert url.startswith("data:image/png;base64,")
        sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert sent.size == size and sent.mode == "RGB"
    assert Image.open(io.BytesIO(base64.b64decode(data_url(deep).split(",", 1)[1]))).getpixel((0, 0))[0] == 156


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_an_openai_request_sends_a_transparent_image_on_white(mode):
    # Before: sent as given, and transformers serve (load_image: convert("RGB")) showed a
    # black-on-transparent diagram all black, while vLLM and the run's readers lay it on white
    import base64

    from prmtree.policies.prompts import data_url

    image = Image.new("RGBA", (4, 2), (0, 0, 0, 0))
    image.putpixel((0, 0), (0, 0, 0, 255))  # one black stroke on a transparent page
    if mode == "LA":
        image = image.convert("LA")
    data = _encoded(image)
    if mode == "P":  # a palette whose transparent colour is red: convert("RGB") shows it red
        image = Image.new("P", (4, 2), 2)
        image.putpalette([255, 255, 255, 0, 0, 0, 255, 0, 0])
        image.putpixel((0, 0), 1)
        data = _encoded(image, transparency=2)
    url = data_url(ProblemImage(data))
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.mode == "RGB" and sent.getpixel((1, 1)) == (255, 255, 255) and sent.getpixel((0, 0)) == (0, 0, 0)
    assert list(sent.getdata()) == list(decode_rgb(data).getdata())  # what vLLM and the run's readers show


def test_the_data_url_cache_is_bounded_by_what_it_holds(monkeypatch):
    # a review: 256 entries of images up to 64 MiB each could hold gigabytes per process
    from prmtree.policies import prompts

    monkeypatch.setattr(prompts, "_SENT", type(prompts._SENT)())
    monkeypatch.setattr(prompts, "_sent_chars", 0)
    monkeypatch.setattr(prompts, "_SENT_MAX_CHARS", 4000)
    images = [ProblemImage(_encoded(Image.new("RGB", (3, 2), (i, 0, 0)))) for i in range(40)]
    for image in images:
        prompts.data_url(image)
    assert prompts._sent_chars == sum(len(u) for u in prompts._SENT.values()) <= 4000
    assert 0 < len(prompts._SENT) < 40 and images[-1].sha256 in prompts._SENT
    big = ProblemImage(_encoded(Image.effect_noise((40, 40), 64).convert("RGB")))
    prompts.data_url(big)  # more than a quarter of the bound: sent, not kept
    assert big.sha256 not in prompts._SENT
