"""A transparent image is shown on white (``records.decode_rgb``), as vLLM's own loader
(``vllm serve``) shows it. Before, ``convert("RGB")`` dropped the alpha onto black: a
black-on-transparent diagram reached the hf and vllm policies, and ``prmtree train``, as
an all-black picture."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from prmtree.engine.records import ProblemImage, decode_rgb


def _png(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **kwargs)
    return buffer.getvalue()


def _on_white() -> Image.Image:
    """The diagram as it is meant to be seen: the square drawn on white."""
    image = Image.new("RGB", (32, 32), "white")
    ImageDraw.Draw(image).rectangle([8, 8, 24, 24], outline=(0, 0, 0), width=2)
    return image


def _diagram(mode: str) -> bytes:
    """A black square outline on a transparent 32x32 ground, as a PNG of ``mode``."""
    rgba = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).rectangle([8, 8, 24, 24], outline=(0, 0, 0, 255), width=2)
    if mode in ("RGBA", "LA"):
        return _png(rgba.convert(mode))
    # a palette, grey or RGB PNG whose ground colour is transparent (a tRNS chunk)
    ground = {"P": 0, "L": 128, "RGB": (255, 0, 255)}[mode]
    flat = Image.new("RGB", (32, 32), (255, 0, 255)) if mode == "RGB" else Image.new(mode, (32, 32), ground)
    if mode == "P":
        flat.putpalette([255, 0, 255, 0, 0, 0])  # 0: the transparent magenta, 1: black
    ImageDraw.Draw(flat).rectangle([8, 8, 24, 24], outline=1 if mode == "P" else 0, width=2)
    return _png(flat, transparency=ground)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "RGB"])
def test_a_black_on_transparent_diagram_is_black_on_white(mode):
    data = _diagram(mode)
    opened = Image.open(io.BytesIO(data))
    assert opened.mode in ("RGBA", "LA") or "transparency" in opened.info
    shown = decode_rgb(data)
    assert shown.mode == "RGB" and shown.size == (32, 32)
    assert shown.getpixel((0, 0)) == (255, 255, 255)  # the ground: white, not black (before)
    assert shown.getpixel((8, 8)) == (0, 0, 0)  # the drawing stays black
    assert np.array_equal(np.asarray(shown), np.asarray(_on_white()))
    assert np.array_equal(np.asarray(ProblemImage(data).to_pil()), np.asarray(shown))


def test_half_transparent_pixels_are_blended_with_white():
    data = _png(Image.new("RGBA", (2, 2), (0, 0, 200, 128)))
    red, green, blue = decode_rgb(data).getpixel((0, 0))
    assert abs(red - 127) <= 1 and abs(green - 127) <= 1 and abs(blue - 227) <= 1


def test_an_opaque_image_with_an_alpha_channel_keeps_its_colours():
    data = _png(Image.new("RGBA", (3, 2), (10, 20, 30, 255)))
    assert decode_rgb(data).getcolors() == [(6, (10, 20, 30))]


def test_a_transparent_image_with_an_exif_orientation_is_turned_and_laid_on_white():
    rgba = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 255), (0, 0, 10, 20))  # a black band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to show: the left band goes to the top
    shown = decode_rgb(_png(rgba, exif=exif.tobytes()))
    assert shown.size == (20, 40)
    assert shown.getpixel((10, 2)) == (0, 0, 0) and shown.getpixel((10, 38)) == (255, 255, 255)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_the_picture_is_the_one_vllms_own_loader_makes(mode):
    image = pytest.importorskip("vllm.multimodal.image")
    data = _diagram(mode)
    theirs = image.convert_image_mode(Image.open(io.BytesIO(data)), "RGB")
    assert np.array_equal(np.asarray(decode_rgb(data)), np.asarray(theirs))


def test_prm_training_is_shown_the_diagram_on_white(tiny_vlm):
    # prmtree train encodes a row's images through decode_rgb: the PRM sees what the policy saw
    from transformers import AutoProcessor

    from prmtree.train.model import Encoder

    processor = AutoProcessor.from_pretrained(str(tiny_vlm))
    processor.tokenizer.add_tokens(["<step>"], special_tokens=True)
    encoder = Encoder(processor, "<step>", 4096, vision=True)
    diagram = _diagram("RGBA")
    black = Image.new("RGB", (32, 32), "black")
    pixels = {name: encoder.encode("What is drawn?", ["A square."], [data])["extra"]["pixel_values"]
              for name, data in (("diagram", diagram), ("white", _png(_on_white())), ("black", _png(black)))}
    assert np.array_equal(pixels["diagram"].numpy(), pixels["white"].numpy())
    assert not np.array_equal(pixels["diagram"].numpy(), pixels["black"].numpy())
