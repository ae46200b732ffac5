"""Image I/O and box geometry: every bad input is made for real as bytes."""

import io
import struct
import uuid
import warnings
import zlib

import fsspec
import numpy as np
import pytest
from PIL import Image

from zwz_ray import images as zi
from zwz_ray.images import ImageDecodeError, ImageInputError


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def _noise(size=(64, 48)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _with_ihdr_size(png: bytes, width: int, height: int) -> bytes:
    """Rewrite the IHDR chunk of a PNG to declare another size (CRC fixed up)."""
    assert png[12:16] == b"IHDR"
    body = struct.pack(">II", width, height) + png[24:29]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + body) & 0xFFFFFFFF)
    return png[:16] + body + crc + png[33:]


def _reason(data: bytes, **kw) -> str:
    with pytest.raises(ImageDecodeError) as info:
        zi.decode_image(data, **kw)
    return info.value.reason


# ---------------------------------------------------------------------------- bad input


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert _reason(zi.read_bytes(str(path))) == "empty_file"


def test_text_file_is_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n")
    err = _reason(zi.read_bytes(str(path)))
    assert err == "not_an_image"
    assert issubclass(ImageDecodeError, ValueError)


@pytest.mark.parametrize("encode", [_png, _jpeg])
def test_truncated(encode):
    data = encode(_noise())
    assert _reason(data[: len(data) // 2]) == "truncated"


def test_damaged_header_is_not_called_a_non_image():
    assert _reason(_png(_noise())[:20]) == "truncated"
    assert _reason(b"\xff\xd8\xff" + b"\x00" * 50) == "corrupt"


def test_decompression_bomb_caught_from_header_before_decoding():
    # 100000 x 100000 declared; the pixel data is only 4x4, so a decode attempt would
    # say "truncated" (or exhaust memory), never "decompression_bomb".
    bomb = _with_ihdr_size(_png(Image.new("1", (4, 4))), 100_000, 100_000)
    before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _reason(bomb) == "decompression_bomb"
    assert Image.MAX_IMAGE_PIXELS == before


def test_own_pixel_limit_checked_before_decoding_and_no_warning_escapes():
    # 12000 x 10000 is above Pillow's warning threshold but below its hard limit.
    data = _with_ihdr_size(_png(Image.new("L", (4, 4))), 12_000, 10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning would raise here
        assert _reason(data, max_pixels=1_000_000) == "decompression_bomb"
        assert zi.probe_size(data) == (12_000, 10_000)


def test_small_limit_applies_to_real_images():
    data = _png(_noise((64, 48)))
    assert _reason(data, max_pixels=64 * 48 - 1) == "decompression_bomb"
    assert zi.decode_image(data, max_pixels=64 * 48).size == (64, 48)


def test_probe_size_reads_header_only():
    assert zi.probe_size(_jpeg(_noise((64, 48)))) == (64, 48)
    with pytest.raises(ImageDecodeError) as info:
        zi.probe_size(b"")
    assert info.value.reason == "empty_file"


# ---------------------------------------------------------------------------- modes


def test_cmyk_jpeg_becomes_rgb():
    img = zi.decode_image(_jpeg(Image.new("CMYK", (16, 16), (0, 255, 255, 0))))
    assert img.mode == "RGB"
    r, g, b = img.getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60


def test_rgba_png_composited_on_white():
    rgba = Image.new("RGBA", (4, 2), (0, 0, 255, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    img = zi.decode_image(_png(rgba))
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert img.getpixel((3, 1)) == (0, 0, 255)


def test_la_png_composited_on_white():
    la = Image.new("LA", (2, 1), (0, 255))
    la.putpixel((1, 0), (0, 0))
    img = zi.decode_image(_png(la))
    assert img.getpixel((0, 0)) == (0, 0, 0) and img.getpixel((1, 0)) == (255, 255, 255)


def test_palette_png_with_transparency():
    pal = Image.new("P", (3, 1), 1)
    pal.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    pal.putpixel((0, 0), 0)
    img = zi.decode_image(_png(pal, transparency=0))
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert img.getpixel((2, 0)) == (0, 200, 0)


def test_16_bit_grayscale_scaled_to_8_bit():
    arr = np.array([[0, 65535], [32896, 1028]], dtype=np.uint16)
    src = Image.fromarray(arr)
    assert src.mode.startswith("I;16")
    img = zi.decode_image(_png(src))
    assert img.mode == "RGB"
    assert [img.getpixel(p)[0] for p in [(0, 0), (1, 0), (0, 1), (1, 1)]] == [0, 255, 128, 4]


def test_32_bit_int_image_is_normalised():
    src = Image.fromarray(np.array([[-5, 100_000]], dtype=np.int32))
    img = zi.to_rgb(src)
    assert img.getpixel((0, 0)) == (0, 0, 0) and img.getpixel((1, 0)) == (255, 255, 255)


def test_one_bit_image():
    src = Image.new("1", (4, 4), 0)
    src.putpixel((1, 1), 1)
    img = zi.decode_image(_png(src))
    assert img.getpixel((1, 1)) == (255, 255, 255) and img.getpixel((0, 0)) == (0, 0, 0)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    data = buf.getvalue()
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert zi.decode_image(data).getpixel((4, 4)) == (255, 0, 0)


def test_exif_orientation_applied():
    src = Image.new("RGB", (40, 20), (0, 0, 255))
    src.paste((255, 0, 0), (0, 0, 20, 20))  # stored: left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    img = zi.decode_image(_jpeg(src, exif=exif.tobytes(), quality=95))
    assert img.size == (20, 40)
    assert img.getpixel((10, 5))[0] > 200  # the red half is now on top
    assert img.getpixel((10, 35))[2] > 200


def test_tiny_image():
    img = zi.decode_image(_png(Image.new("RGB", (1, 1), (7, 8, 9))))
    assert img.size == (1, 1) and img.getpixel((0, 0)) == (7, 8, 9)


def test_unsupported_mode_is_classified():
    with pytest.raises(ImageDecodeError) as info:
        zi.to_rgb(Image.new("La", (2, 2)))  # premultiplied alpha
    assert info.value.reason == "unsupported_mode"


def test_encode_round_trip():
    src = _noise((20, 10))
    assert zi.decode_image(zi.encode_image(src, "PNG")).tobytes() == src.tobytes()
    jpeg = zi.encode_image(Image.new("RGBA", (8, 8), (10, 200, 10, 255)), "jpg", quality=90)
    assert zi.probe_size(jpeg) == (8, 8) and jpeg[:3] == b"\xff\xd8\xff"
    with pytest.raises(ValueError):
        zi.encode_image(src, "TIFF")


# ---------------------------------------------------------------------------- reading


def test_read_bytes_limits_and_errors(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"x" * 100)
    assert len(zi.read_bytes(str(path), max_bytes=100)) == 100
    with pytest.raises(ImageDecodeError) as info:
        zi.read_bytes(str(path), max_bytes=99)
    assert info.value.reason == "too_large"
    with pytest.raises(ImageDecodeError) as info:
        zi.read_bytes(str(tmp_path / "missing.png"))
    assert info.value.reason == "not_found"


# ---------------------------------------------------------------------------- listing


def test_list_images_nested_folders_globs_and_dedup(tmp_path):
    for rel in ["a/one.jpg", "a/b/two.PNG", "a/b/c/three.webp", "a/notes.txt", "x.TIF"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "empty").mkdir()
    root = str(tmp_path)
    got = zi.list_images([f"{root}/a", f"{root}/a/b/two.PNG", f"{root}/*.TIF", f"{root}/x.TIF"])
    assert got == sorted([f"{root}/a/b/c/three.webp", f"{root}/a/b/two.PNG",
                          f"{root}/a/one.jpg", f"{root}/x.TIF"])
    assert zi.list_images([f"{root}/empty"]) == []
    with pytest.raises(ImageInputError):  # globs are case-sensitive like the shell's
        zi.list_images([f"{root}/a/*/*.png"])
    assert zi.list_images([f"file://{root}/a/b/c"]) == [f"file://{root}/a/b/c/three.webp"]


def test_list_images_missing_path_named(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(ImageInputError, match="nope"):
        zi.list_images([str(tmp_path), missing])
    with pytest.raises(ImageInputError, match=r"\*\.jpg"):
        zi.list_images([str(tmp_path / "*.jpg")])
    assert issubclass(ImageInputError, ValueError)


def test_list_and_read_memory_filesystem():
    root = f"memory://zwz-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    png = _png(Image.new("RGB", (3, 2)))
    fs.pipe(f"{root}/imgs/deep/a.png", png)
    fs.pipe(f"{root}/imgs/b.JPEG", b"")
    fs.pipe(f"{root}/imgs/c.csv", b"")
    try:
        got = zi.list_images([f"{root}/imgs"])
        assert [p.rsplit("/", 1)[-1] for p in got] == ["b.JPEG", "a.png"]
        assert all(p.startswith("memory://") for p in got)
        deep = [p for p in got if p.endswith("a.png")][0]
        assert zi.decode_image(zi.read_bytes(deep)).size == (3, 2)
        assert zi.list_images([f"{root}/imgs/*.csv"]) == []  # matched, but no image
        assert zi.list_images([f"{root}/imgs/*.JPEG"]) == [p for p in got if "b.JPEG" in p]
        with pytest.raises(ImageInputError):
            zi.list_images([f"{root}/nothing"])
    finally:
        fs.rm(root.replace("memory://", "/"), recursive=True)


# ---------------------------------------------------------------------------- geometry


def test_clamp_area_and_empty():
    assert zi.clamp_box((-10, -5, 120, 90), 100, 80) == (0, 0, 100, 80)
    assert zi.clamp_box((50, 40, 10, 20), 100, 80) == (10, 20, 50, 40)
    assert zi.box_area((10, 10, 20, 30)) == 200
    assert zi.box_area((20, 10, 10, 30)) == 0
    assert zi.box_area_fraction((0, 0, 50, 40), 100, 80) == pytest.approx(0.25)
    assert zi.box_area_fraction((-50, -50, 50, 40), 100, 80) == pytest.approx(0.25)
    assert zi.is_empty_box((5, 5, 5, 10)) and zi.is_empty_box((5, 9, 8, 3))
    assert not zi.is_empty_box((5.0, 5.0, 5.5, 5.5))
    assert zi.is_empty_box(zi.clamp_box((200, 10, 300, 20), 100, 80))


def test_expand_scale_relative_iou():
    assert zi.expand_box((20, 20, 120, 70), 0.05, 200, 100) == pytest.approx((15, 17.5, 125, 72.5))
    assert zi.expand_box((2, 1, 102, 51), 0.05, 104, 52) == pytest.approx((0, 0, 104, 52))
    assert zi.scale_box((10, 20, 30, 40), 2, 0.5) == (20, 10, 60, 20)
    assert zi.relative_to_absolute((0, 500, 1000, 250), 1600, 1280) == pytest.approx(
        (0, 640, 1600, 320))
    assert zi.box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert zi.box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert zi.box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert zi.box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_micro_crop_clamps_and_upscales_2x():
    img = _noise((100, 80))
    crop = zi.micro_crop(img, (10, 20, 60, 45))
    assert crop.size == (100, 50)
    assert zi.micro_crop(img, (90, 70, 130, 100)).size == (20, 20)  # clamped to 10x10
    assert zi.micro_crop(img, (10.4, 20.6, 20.2, 30.1)).size == (22, 22)  # covers 11x11 px
    assert zi.micro_crop(img, (0, 0, 5, 5), upscale=1.0).tobytes() == img.crop(
        (0, 0, 5, 5)).tobytes()
    with pytest.raises(ValueError):
        zi.micro_crop(img, (120, 10, 140, 20))


def test_overlay_draws_red_inside_expanded_box_only():
    img = Image.new("RGB", (200, 100), (90, 90, 90))
    out = zi.draw_box_overlay(img, (50, 30, 150, 70))  # expanded: (45, 28, 155, 72)
    assert img.getpixel((45, 50)) == (90, 90, 90)  # the input is untouched
    red = (255, 0, 0)
    for x in range(45, 50):
        assert out.getpixel((x, 50)) == red and out.getpixel((154 - (x - 45), 50)) == red
    for y in range(28, 33):
        assert out.getpixel((100, y)) == red and out.getpixel((100, 71 - (y - 28))) == red
    for far in [(44, 50), (50, 50), (100, 50), (100, 27), (100, 72), (5, 5), (199, 99)]:
        assert out.getpixel(far) == (90, 90, 90), far
    edge = zi.draw_box_overlay(img, (0, 0, 200, 100))  # clamped to the image border
    assert edge.getpixel((0, 0)) == red and edge.getpixel((199, 99)) == red


def test_fit_pixels():
    img = Image.new("RGB", (400, 200))
    small = zi.fit_pixels(img, 100, 20_000)
    assert small.width * small.height <= 20_000 and small.width == 2 * small.height
    big = zi.fit_pixels(img, 320_000, 10**7)
    assert big.width * big.height >= 320_000 and abs(big.width / big.height - 2) < 0.01
    assert zi.fit_pixels(img, 100, 10**7) is img
    with pytest.raises(ValueError):
        zi.fit_pixels(img, 10, 5)
