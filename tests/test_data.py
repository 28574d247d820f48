"""ti_core.data: reading every kind of image file users have, and squaring images without stretching them."""

from __future__ import annotations

import random
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from ti_core.data import (
    IMAGE_EXTENSIONS,
    crop_offsets,
    fit_short_side,
    load_images,
    open_image,
    pad_to_square,
    square_crop,
    to_tensor,
)
from ti_core.errors import ImageSetError, SettingError, TIError

RED, BLUE, GREEN, WHITE = (255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 255, 255)


def halves(size=(40, 20), left=RED, right=BLUE) -> Image.Image:
    """An RGB image whose left half is `left` and right half `right`."""
    img = Image.new("RGB", size, right)
    img.paste(left, (0, 0, size[0] // 2, size[1]))
    return img


def circle(size=(300, 200), diameter=100) -> Image.Image:
    """A black disc centred on white; a stretch would turn it into an ellipse."""
    img = Image.new("RGB", size, WHITE)
    cx, cy, r = size[0] / 2, size[1] / 2, diameter / 2
    ImageDraw.Draw(img).ellipse((cx - r, cy - r, cx + r, cy + r), fill=(0, 0, 0))
    return img


def dark_box(img: Image.Image) -> tuple[int, int]:
    """(width, height) of the bounding box of the dark pixels."""
    ys, xs = np.nonzero(np.asarray(img.convert("L")) < 128)
    return xs.max() - xs.min() + 1, ys.max() - ys.min() + 1


def png_bytes(width, height, depth, color_type, rows, extra_chunks=()) -> bytes:
    """A PNG written by hand, for the 16-bit layouts Pillow cannot write itself."""

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = b"".join(b"\x00" + row for row in rows)
    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    body = [chunk(b"IHDR", header), *(chunk(k, b) for k, b in extra_chunks), chunk(b"IDAT", zlib.compress(raw))]
    return b"\x89PNG\r\n\x1a\n" + b"".join(body) + chunk(b"IEND", b"")


def pixel(img, xy):
    return img.getpixel(xy)


def close(a, b, tol=6):
    return all(abs(x - y) <= tol for x, y in zip(a, b))


# ------------------------------------------------------------------------------------------------- open_image


def test_extensions_are_lowercase_dotted_and_include_the_common_formats():
    assert set(IMAGE_EXTENSIONS) == {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def test_plain_rgb_png_round_trips_exactly(tmp_path):
    img = halves()
    img.save(tmp_path / "a.png")
    src = open_image(tmp_path / "a.png")
    assert src.rgb.mode == "RGB" and src.alpha is None and src.caption == ""
    assert src.size == (40, 20) and src.path == tmp_path / "a.png"
    assert np.array_equal(np.asarray(src.rgb), np.asarray(img))


def test_exif_orientation_6_is_applied(tmp_path):
    # Stored 40 wide x 20 high, red left, blue right; orientation 6 means "rotate 90 degrees clockwise to view".
    img = halves((40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "phone.jpg", quality=95, exif=exif)
    src = open_image(tmp_path / "phone.jpg")
    assert src.size == (20, 40)
    assert close(pixel(src.rgb, (10, 5)), RED, 40)  # the left of the stored image is now the top
    assert close(pixel(src.rgb, (10, 34)), BLUE, 40)


def test_rgba_is_flattened_onto_white_and_alpha_kept(tmp_path):
    img = Image.new("RGBA", (4, 2), (255, 0, 0, 255))
    img.putpixel((2, 0), (0, 0, 0, 0))  # fully transparent black
    img.putpixel((3, 0), (0, 0, 0, 128))  # half-transparent black
    img.save(tmp_path / "cut out.png")
    src = open_image(tmp_path / "cut out.png")
    assert src.rgb.mode == "RGB" and src.alpha is not None and src.alpha.mode == "L"
    assert pixel(src.rgb, (0, 0)) == RED
    assert pixel(src.rgb, (2, 0)) == WHITE
    assert close(pixel(src.rgb, (3, 0)), (127, 127, 127), 2)
    assert [pixel(src.alpha, (x, 0)) for x in range(4)] == [255, 255, 0, 128]


def test_opaque_rgba_has_no_alpha(tmp_path):
    Image.new("RGBA", (4, 4), (1, 2, 3, 255)).save(tmp_path / "opaque.png")
    src = open_image(tmp_path / "opaque.png")
    assert src.alpha is None and pixel(src.rgb, (0, 0)) == (1, 2, 3)


def test_la_image_gives_gray_rgb_and_alpha(tmp_path):
    img = Image.new("LA", (2, 1), (100, 255))
    img.putpixel((1, 0), (0, 0))
    img.save(tmp_path / "la.png")
    src = open_image(tmp_path / "la.png")
    assert pixel(src.rgb, (0, 0)) == (100, 100, 100) and pixel(src.rgb, (1, 0)) == WHITE
    assert np.asarray(src.alpha).ravel().tolist() == [255, 0]


def test_palette_png_with_transparency(tmp_path):
    img = Image.new("P", (2, 2), 0)
    img.putpalette([0, 255, 0, 0, 0, 0] + [0] * 762)  # index 0 green, index 1 black
    img.putpixel((1, 1), 1)
    img.save(tmp_path / "pal.png", transparency=1)
    src = open_image(tmp_path / "pal.png")
    assert pixel(src.rgb, (0, 0)) == GREEN and pixel(src.rgb, (1, 1)) == WHITE
    assert pixel(src.alpha, (0, 0)) == 255 and pixel(src.alpha, (1, 1)) == 0


def test_palette_without_transparency_has_no_alpha(tmp_path):
    halves().convert("P").save(tmp_path / "pal.gif")
    src = open_image(tmp_path / "pal.gif")
    assert src.alpha is None and close(pixel(src.rgb, (0, 0)), RED, 2)


@pytest.mark.parametrize("mode", ["L", "1"])
def test_grayscale_becomes_rgb(tmp_path, mode):
    img = Image.new("L", (4, 4), 0)
    img.paste(255, (0, 0, 2, 4))
    img.convert(mode).save(tmp_path / "gray.png")
    src = open_image(tmp_path / "gray.png")
    assert src.rgb.mode == "RGB" and pixel(src.rgb, (0, 0)) == WHITE and pixel(src.rgb, (3, 0)) == (0, 0, 0)


def test_16bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    Image.fromarray(np.array([[0, 32768, 65535, 1000]], dtype=np.uint16)).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    src = open_image(tmp_path / "deep.png")
    assert [pixel(src.rgb, (x, 0))[0] for x in range(4)] == [0, 128, 255, 4]
    assert src.alpha is None


def test_16bit_pgm_read_as_mode_i_is_scaled(tmp_path):
    Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16)).save(tmp_path / "deep.pgm")
    path = tmp_path / "deep.pgm"
    assert Image.open(path).mode == "I"
    src = open_image(path)
    assert [pixel(src.rgb, (x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), WHITE]


def test_16bit_grayscale_with_transparent_key(tmp_path):
    row = np.array([65535, 1234], dtype=">u2").tobytes()
    trns = (b"tRNS", struct.pack(">H", 1234))
    (tmp_path / "key.png").write_bytes(png_bytes(2, 1, 16, 0, [row], [trns]))
    src = open_image(tmp_path / "key.png")
    assert np.asarray(src.alpha).ravel().tolist() == [255, 0]
    assert pixel(src.rgb, (0, 0)) == WHITE and pixel(src.rgb, (1, 0)) == WHITE  # the keyed pixel flattened


def test_16bit_rgb_png(tmp_path):
    row = np.array([[65535, 0, 0], [32768, 32768, 32768], [0, 0, 65535]], dtype=">u2").tobytes()
    (tmp_path / "rgb16.png").write_bytes(png_bytes(3, 1, 16, 2, [row]))
    src = open_image(tmp_path / "rgb16.png")
    assert [pixel(src.rgb, (x, 0)) for x in range(3)] == [RED, (128, 128, 128), BLUE]


@pytest.mark.parametrize("name", ["cmyk.jpg", "cmyk.tif"])
def test_cmyk_becomes_rgb(tmp_path, name):
    # Pillow writes CMYK JPEGs with an Adobe marker (inverted CMYK), so the JPEG case covers that reading path.
    img = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # red
    img.paste((255, 0, 255, 0), (4, 0, 8, 8))  # green on the right
    img.save(tmp_path / name)
    assert Image.open(tmp_path / name).mode == "CMYK"
    src = open_image(tmp_path / name)
    assert close(pixel(src.rgb, (1, 4)), RED, 12) and close(pixel(src.rgb, (6, 4)), GREEN, 12)


@pytest.mark.parametrize("name", ["anim.gif", "anim.webp"])
def test_animated_file_gives_first_frame(tmp_path, name):
    frames = [Image.new("RGB", (8, 8), c) for c in (RED, BLUE, GREEN)]
    frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
    assert Image.open(tmp_path / name).n_frames == 3
    src = open_image(tmp_path / name)
    assert close(pixel(src.rgb, (4, 4)), RED, 4)


def test_caption_is_read_from_the_txt_beside_the_image(tmp_path):
    halves().save(tmp_path / "cat.png")
    (tmp_path / "cat.txt").write_text("\ufeff  a cat on a red sofa \n", encoding="utf-8")
    assert open_image(tmp_path / "cat.png").caption == "a cat on a red sofa"


def test_caption_that_is_not_utf8_is_an_error_naming_it(tmp_path):
    halves().save(tmp_path / "cat.png")
    (tmp_path / "cat.txt").write_bytes(b"caf\xe9")
    with pytest.raises(ImageSetError, match=r"cat\.txt.*UTF-8"):
        open_image(tmp_path / "cat.png")


def _valid_bytes(fmt: str) -> bytes:
    import io

    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("ext,fmt", [("png", "PNG"), ("jpg", "JPEG")])
@pytest.mark.parametrize("damage", ["zero-byte", "truncated", "garbage", "corrupt-body"])
def test_broken_files_are_errors_naming_the_file(tmp_path, ext, fmt, damage):
    good = _valid_bytes(fmt)
    if damage == "zero-byte":
        data = b""
    elif damage == "truncated":
        data = good[: len(good) // 2]
    elif damage == "garbage":
        data = bytes(range(256)) * 4
    else:  # header intact, image data overwritten
        data = good[:100] + b"\x00" * 400 + good[500:] if fmt == "PNG" else good[:400] + b"\xff" * 400 + good[800:]
    path = tmp_path / f"broken {damage}.{ext}"
    path.write_bytes(data)
    with pytest.raises(ImageSetError) as info:
        open_image(path)
    message = str(info.value)
    assert str(path) in message
    assert ("empty" in message) if damage == "zero-byte" else ("Pillow says" in message)
    assert isinstance(info.value, TIError) and isinstance(info.value, ValueError)


def test_missing_file_and_folder_given_as_image(tmp_path):
    with pytest.raises(ImageSetError, match="does not exist"):
        open_image(tmp_path / "nope.png")
    with pytest.raises(ImageSetError, match="is a folder"):
        open_image(tmp_path)


@pytest.mark.parametrize("side", [12, 20])  # 144 px: over the limit (a warning in Pillow); 400 px: over twice it
def test_decompression_bomb_is_refused(tmp_path, monkeypatch, side):
    Image.new("RGB", (side, side)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageSetError) as info:
        open_image(tmp_path / "bomb.png")
    assert "bomb.png" in str(info.value) and str(side * side) in str(info.value)


def test_float_image_is_refused_with_advice(tmp_path):
    Image.new("F", (4, 4), 0.5).save(tmp_path / "float.tif")
    with pytest.raises(ImageSetError, match=r"float\.tif.*16-bit"):
        open_image(tmp_path / "float.tif")


# ------------------------------------------------------------------------------------------------- load_images


def test_load_images_sorted_with_captions_and_odd_names(tmp_path):
    folder = tmp_path / "mes photos été"
    folder.mkdir()
    halves(left=BLUE).save(folder / "b chat 猫.PNG")
    halves().save(folder / "a.jpg")
    (folder / "b chat 猫.txt").write_text("a cat", encoding="utf-8")
    images, warnings = load_images(str(folder))
    assert [im.path.name for im in images] == ["a.jpg", "b chat 猫.PNG"]
    assert [im.caption for im in images] == ["", "a cat"]
    assert warnings == []


def test_mixed_folder_warns_about_each_skipped_entry(tmp_path):
    for name in ("1.png", "2.webp"):
        halves().save(tmp_path / name)
    (tmp_path / "notes.doc").write_text("x")
    (tmp_path / "layers.psd").write_text("x")
    (tmp_path / "1.txt").write_text("caption")
    (tmp_path / "orphan.txt").write_text("caption of a removed image")
    (tmp_path / "sub").mkdir()
    halves().save(tmp_path / "sub" / "3.png")
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x01")
    (tmp_path / "._1.png").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork: not an image despite its name
    images, warnings = load_images(tmp_path)
    assert [im.path.name for im in images] == ["1.png", "2.webp"]
    text = "\n".join(warnings)
    for name in ("notes.doc", "layers.psd", "orphan.txt", "sub/"):
        assert name in text
    assert "1.txt" not in text and "DS_Store" not in text and "._1.png" not in text
    assert len(warnings) == 4


def test_single_image_is_allowed_with_a_warning(tmp_path):
    halves().save(tmp_path / "only.png")
    images, warnings = load_images(tmp_path)
    assert len(images) == 1
    assert len(warnings) == 1 and "only.png" in warnings[0] and "one image" in warnings[0]


def test_unreadable_images_in_a_folder_are_all_named_in_one_error(tmp_path):
    halves().save(tmp_path / "good.png")
    (tmp_path / "bad1.jpg").write_bytes(b"")
    (tmp_path / "bad2.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageSetError) as info:
        load_images(tmp_path)
    message = str(info.value)
    assert "bad1.jpg" in message and "bad2.png" in message and "good.png" not in message
    assert "2 of the 3" in message


def test_empty_folder(tmp_path):
    with pytest.raises(ImageSetError, match="empty") as info:
        load_images(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_folder_with_only_non_images_names_what_it_found(tmp_path):
    (tmp_path / "readme.md").write_text("x")
    (tmp_path / "cat.txt").write_text("a cat")
    with pytest.raises(ImageSetError) as info:
        load_images(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "readme.md" in message and "cat.txt" in message and ".png" in message


def test_missing_folder_and_file_instead_of_folder(tmp_path):
    with pytest.raises(ImageSetError, match="does not exist"):
        load_images(tmp_path / "nope")
    halves().save(tmp_path / "x.png")
    with pytest.raises(ImageSetError, match="not a folder"):
        load_images(tmp_path / "x.png")


# ------------------------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("size_wh", [(300, 200), (200, 300)])
@pytest.mark.parametrize("mode", ["center", "random", "focus", "pad"])
def test_non_square_images_are_never_stretched(size_wh, mode):
    # The disc is small enough that every crop window (random ones too) holds all of it.
    out = square_crop(circle(size_wh), 64, mode, rng=random.Random(1), focus=(0.5, 0.5))
    assert out.size == (64, 64)
    width, height = dark_box(out)
    assert abs(width - height) <= 1  # a stretched disc would be about 1.5 times wider one way
    expected = 100 * 64 / (300 if mode == "pad" else 200)
    assert abs(width - expected) <= 2


@pytest.mark.parametrize("size_wh,expected", [((300, 200), (96, 64)), ((200, 300), (64, 96)), ((50, 50), (64, 64))])
def test_fit_short_side_keeps_aspect(size_wh, expected):
    assert fit_short_side(Image.new("RGB", size_wh), 64).size == expected


def test_tiny_image_is_upscaled_with_its_content():
    tiny = halves((16, 16))
    out = square_crop(tiny, 64)
    assert out.size == (64, 64)
    assert close(pixel(out, (8, 32)), RED, 2) and close(pixel(out, (56, 32)), BLUE, 2)
    # LANCZOS, not NEAREST: the red/blue border gets blended pixels
    row = {pixel(out, (x, 32)) for x in range(64)}
    assert len(row) > 2


def test_center_crop_takes_the_middle():
    img = Image.new("RGB", (300, 100), RED)
    img.paste(BLUE, (100, 0, 200, 100))  # only the middle third is blue
    out = square_crop(img, 64, "center")
    assert all(close(pixel(out, (x, y)), BLUE, 4) for x in (2, 32, 61) for y in (2, 61))


@pytest.mark.parametrize("focus,expected", [((0.0, 0.0), (0, 0)), ((1.0, 1.0), (0, 128)), ((0.5, 0.9), (0, 64))])
def test_focus_offsets_are_centred_there_as_far_as_the_borders_allow(focus, expected):
    assert crop_offsets((192, 64), 64, "focus", focus=focus) == expected


def test_focus_crop_content():
    img = Image.new("RGB", (300, 100), RED)
    img.paste(BLUE, (200, 0, 300, 100))  # right third blue
    out = square_crop(img, 64, "focus", focus=(0.95, 0.5))
    assert close(pixel(out, (32, 32)), BLUE, 4)


def test_random_crop_is_deterministic_for_a_seed_and_varies_across_draws():
    img = circle((300, 200))

    def draws(seed):
        rng = random.Random(seed)
        return [np.asarray(square_crop(img, 64, "random", rng=rng)).tobytes() for _ in range(6)]

    assert draws(3) == draws(3)
    assert len(set(draws(3))) > 1


def test_random_offsets_cover_every_allowed_position():
    rng = random.Random(0)
    seen = {crop_offsets((64 + 24, 64), 64, "random", rng=rng, multiple=8) for _ in range(200)}
    assert seen == {(0, 0), (0, 8), (0, 16), (0, 24)}


@given(
    width=st.integers(64, 400),
    height=st.integers(64, 400),
    mode=st.sampled_from(["center", "random", "focus"]),
    multiple=st.sampled_from([1, 8]),
    seed=st.integers(0, 1000),
    fx=st.floats(0, 1),
    fy=st.floats(0, 1),
)
def test_offsets_are_multiples_and_keep_the_window_inside(width, height, mode, multiple, seed, fx, fy):
    top, left = crop_offsets((width, height), 64, mode, rng=random.Random(seed), focus=(fx, fy), multiple=multiple)
    assert top % multiple == 0 and left % multiple == 0
    assert 0 <= top <= height - 64 and 0 <= left <= width - 64


def test_center_offsets_with_multiple_8():
    assert crop_offsets((300, 200), 64, "center") == (68, 118)
    assert crop_offsets((300, 200), 64, "center", multiple=8) == (64, 120)


def test_pad_outcrop_fits_the_long_side_and_centres():
    img = Image.new("RGB", (200, 100), RED)
    out = pad_to_square(img, 64, "edge")
    assert out.size == (64, 64)
    # edge fill repeats the red border pixels into the padding
    assert all(close(pixel(out, (x, y)), RED, 2) for x in (0, 32, 63) for y in (0, 32, 63))


def test_pad_edge_and_blur_differ():
    img = halves((200, 100), RED, BLUE)
    img.paste(GREEN, (0, 0, 200, 4))  # a green top row: edge fill repeats it upward, blur does not
    edge, blur = pad_to_square(img, 64, "edge"), pad_to_square(img, 64, "blur")
    assert edge.size == blur.size == (64, 64)
    assert close(pixel(edge, (20, 2)), GREEN, 8)
    assert not close(pixel(blur, (20, 2)), GREEN, 60)
    # the image itself sits unchanged in the middle of both
    assert np.array_equal(np.asarray(edge)[20:44], np.asarray(blur)[20:44])


@pytest.mark.parametrize("fill", ["edge", "blur"])
def test_mask_padding_is_zero(fill):
    mask = Image.new("L", (200, 100), 255)
    out = pad_to_square(mask, 64, fill)
    values = np.asarray(out)
    assert out.mode == "L" and values.shape == (64, 64)
    assert (values[:16] == 0).all() and (values[48:] == 0).all() and (values[17:47] == 255).all()


def test_mask_and_image_crop_the_same_window():
    img, mask = circle((300, 200)), Image.new("L", (300, 200), 255)
    assert square_crop(img, 64, "random", rng=random.Random(5)).size == square_crop(mask, 64, "center").size


@pytest.mark.parametrize("bad", [0, -8, 30, 8.0, "512", True, None])
def test_size_must_be_a_positive_multiple_of_8(bad):
    with pytest.raises(SettingError, match="multiple of 8"):
        square_crop(Image.new("RGB", (100, 100)), bad)


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        ({"mode": "middle"}, "center, random, pad, focus"),
        ({"fill": "mirror"}, "edge, blur"),
        ({"mode": "random"}, "rng"),
        ({"mode": "focus"}, "focus"),
        ({"mode": "focus", "focus": (1.5, 0.5)}, "between 0 and 1"),
        ({"mode": "focus", "focus": (float("nan"), 0.5)}, "between 0 and 1"),
    ],
)
def test_bad_crop_arguments_list_legal_values(kwargs, pattern):
    with pytest.raises(SettingError, match=pattern):
        square_crop(Image.new("RGB", (100, 100)), 64, **kwargs)


def test_crop_offsets_errors():
    with pytest.raises(SettingError, match="pad_to_square"):
        crop_offsets((100, 100), 64, "pad")
    with pytest.raises(SettingError, match="does not fit"):
        crop_offsets((100, 50), 64, "center")
    with pytest.raises(SettingError, match="multiple"):
        crop_offsets((100, 100), 64, "center", multiple=0)


def test_other_modes_are_refused_by_geometry():
    with pytest.raises(ImageSetError, match="RGBA"):
        square_crop(Image.new("RGBA", (100, 100)), 64)


def test_to_tensor_ranges():
    img = halves((4, 2), WHITE, (0, 0, 0))
    t = to_tensor(img)
    assert t.dtype == torch.float32 and t.shape == (3, 2, 4)
    assert torch.all(t[:, :, :2] == 1.0) and torch.all(t[:, :, 2:] == -1.0)
    mask = Image.new("L", (4, 2), 255)
    mask.putpixel((0, 0), 0)
    m = to_tensor(mask)
    assert m.shape == (1, 2, 4) and m[0, 0, 0] == 0.0 and m[0, 1, 3] == 1.0
    with pytest.raises(ImageSetError):
        to_tensor(Image.new("RGBA", (2, 2)))
