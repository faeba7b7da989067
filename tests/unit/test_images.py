import io
import json
import struct
import time

import numpy as np
import pytest
from PIL import Image

from pipelines.errors import InvalidInput
from pipelines.images import (
    DatasetShape,
    ImageInfo,
    PreprocessingPolicy,
    choose_policy,
    decode_image,
    inspect_image,
    load_for_model,
    make_thumbnail,
    preprocess,
)
from tests.factories import (
    exif_orientation,
    make_animation,
    make_declared_png,
    make_gradient,
    make_image,
    make_noise,
)

MAX_PIXELS = 10_000_000
RED = (200, 30, 30)
RED_AS_GRAY = 81  # ITU-R 601 luma of RED, as Pillow computes it


def _close(actual, expected, tolerance=4):
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


FORMATS = [
    pytest.param(make_image(fmt="JPEG"), ImageInfo(32, 32, "RGB", "JPEG", False), RED, id="jpeg"),
    pytest.param(make_image(), ImageInfo(32, 32, "RGB", "PNG", False), RED, id="png-rgb"),
    pytest.param(make_image(mode="L"), ImageInfo(32, 32, "L", "PNG", True), (RED_AS_GRAY,) * 3, id="png-gray"),
    pytest.param(make_image(mode="I;16"), ImageInfo(32, 32, "I;16", "PNG", True), (RED_AS_GRAY,) * 3, id="png-16bit"),
    pytest.param(make_image(mode="P"), ImageInfo(32, 32, "P", "PNG", False), RED, id="png-palette"),
    pytest.param(
        make_image((*RED, 255), mode="RGBA"),
        ImageInfo(32, 32, "RGBA", "PNG", False),
        RED,
        id="png-rgba-opaque",
    ),
    pytest.param(make_image(fmt="GIF"), ImageInfo(32, 32, "P", "GIF", False), RED, id="gif"),
    pytest.param(make_animation(), ImageInfo(20, 10, "P", "GIF", False), (255, 0, 0), id="gif-first-frame"),
    pytest.param(make_image(fmt="WEBP"), ImageInfo(32, 32, "RGB", "WEBP", False), RED, id="webp"),
    pytest.param(
        make_animation(fmt="WEBP"),
        ImageInfo(20, 10, "RGB", "WEBP", False),
        (255, 0, 0),
        id="webp-first-frame",
    ),
    pytest.param(make_image(fmt="BMP"), ImageInfo(32, 32, "RGB", "BMP", False), RED, id="bmp"),
    pytest.param(make_image(fmt="TIFF"), ImageInfo(32, 32, "RGB", "TIFF", False), RED, id="tiff"),
    pytest.param(
        make_image(fmt="TIFF", mode="I;16"),
        ImageInfo(32, 32, "I;16", "TIFF", True),
        (RED_AS_GRAY,) * 3,
        id="tiff-16bit",
    ),
    pytest.param(
        make_image(fmt="TIFF", mode="F"),
        ImageInfo(32, 32, "F", "TIFF", True),
        (RED_AS_GRAY,) * 3,
        id="tiff-float",
    ),
    pytest.param(make_image(fmt="JPEG", mode="CMYK"), ImageInfo(32, 32, "CMYK", "JPEG", False), RED, id="jpeg-cmyk"),
]


@pytest.mark.parametrize(("data", "expected", "_"), FORMATS)
def test_inspect_image_describes_every_format(data, expected, _):
    assert inspect_image(data, "cat/x", max_pixels=MAX_PIXELS) == expected


@pytest.mark.parametrize(("data", "info", "rgb"), FORMATS)
def test_decode_image_gives_8bit_rgb_and_gray(data, info, rgb):
    color = decode_image(data, "cat/x", max_pixels=MAX_PIXELS)
    gray = decode_image(data, "cat/x", max_pixels=MAX_PIXELS, color="gray")

    assert (color.mode, gray.mode) == ("RGB", "L")
    assert color.size == gray.size == (info.width, info.height)
    assert _close(color.getpixel((5, 5)), rgb)
    assert _close([gray.getpixel((5, 5))], [round(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])])


def test_16bit_is_scaled_not_clipped():
    # Pillow's convert("L") clips 16-bit values at 255, which would turn this mid-gray picture white.
    data = make_image((128, 128, 128), mode="I;16")

    assert decode_image(data, "a.png", max_pixels=MAX_PIXELS, color="gray").getpixel((3, 3)) == 128


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(make_image((*RED, 0), mode="RGBA"), (255, 255, 255), id="rgba-transparent"),
        pytest.param(make_image((*RED, 128), mode="RGBA"), (227, 142, 142), id="rgba-half"),
        pytest.param(make_image((*RED, 0), mode="LA"), (255, 255, 255), id="gray-alpha-transparent"),
        pytest.param(make_image(mode="P", transparency=0), (255, 255, 255), id="palette-transparent"),
    ],
)
def test_transparency_is_composited_on_white(data, expected):
    assert _close(decode_image(data, "a.png", max_pixels=MAX_PIXELS).getpixel((5, 5)), expected, 2)


def test_exif_orientation_is_applied():
    # Red grows left to right, green top to bottom; orientation 6 means "turn 90 degrees clockwise to view".
    data = make_gradient((40, 20), "JPEG", exif=exif_orientation(6))

    info = inspect_image(data, "cat/rotated.jpg", max_pixels=MAX_PIXELS)
    image = decode_image(data, "cat/rotated.jpg", max_pixels=MAX_PIXELS)

    assert (info.width, info.height) == (20, 40)
    assert image.size == (20, 40)
    red_top, red_bottom = image.getpixel((0, 0))[0], image.getpixel((0, 39))[0]
    green_left, green_right = image.getpixel((0, 0))[1], image.getpixel((19, 0))[1]
    assert red_top < 50 < 200 < red_bottom
    assert green_right < 50 < 200 < green_left


def _corrupt_crc(data: bytes, chunk: bytes) -> bytes:
    position = data.find(chunk)
    (length,) = struct.unpack(">I", data[position - 4 : position])
    broken = bytearray(data)
    broken[position + 4 + length] ^= 0xFF
    return bytes(broken)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        pytest.param(b"", "empty (0 bytes)", id="zero-bytes"),
        pytest.param(b"my holiday notes\nday 1: beach\n", "it is a text file", id="text-renamed-jpg"),
        pytest.param(
            b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><circle r="4"/></svg>',
            "SVG drawing",
            id="svg",
        ),
        pytest.param(b"<!DOCTYPE html><html><body>cat</body></html>", "web page", id="html"),
        pytest.param(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "PDF document", id="pdf"),
        pytest.param(bytes(range(256)) * 4, "not a picture", id="random-binary"),
        pytest.param(make_noise(fmt="JPEG")[:2000], "damaged or incomplete JPEG", id="truncated-jpeg"),
        pytest.param(make_noise(fmt="PNG")[:5000], "damaged or incomplete PNG", id="truncated-png"),
        pytest.param(make_noise(fmt="JPEG")[:300], "damaged or incomplete JPEG", id="jpeg-header-only"),
        pytest.param(make_noise(fmt="BMP")[:3000], "damaged or incomplete BMP", id="truncated-bmp"),
        pytest.param(b"BMI,weight,height\n22.5,70,1.76\n", "it is a text file", id="text-starting-like-bmp"),
        pytest.param(_corrupt_crc(make_noise(fmt="PNG"), b"IDAT"), "checksum of its IDAT", id="png-bad-idat-crc"),
        pytest.param(_corrupt_crc(make_noise(fmt="PNG"), b"IHDR"), "checksum of its IHDR", id="png-bad-ihdr-crc"),
        pytest.param(b"\x00\x00\x00\x20ftypheic\x00\x00\x00\x00", "HEIC", id="heic"),
    ],
)
def test_unreadable_files_are_refused_with_a_reason(data, words):
    with pytest.raises(InvalidInput) as raised:
        inspect_image(data, "cat/7.jpg", max_pixels=MAX_PIXELS)

    assert words in raised.value.detail
    assert "'cat/7.jpg'" in raised.value.detail
    with pytest.raises(InvalidInput):
        decode_image(data, "cat/7.jpg", max_pixels=MAX_PIXELS)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(make_declared_png(30_000, 30_000), id="declared-png"),
        pytest.param(make_declared_png(30_000, 30_000, mode_byte=2), id="declared-png-rgb"),
    ],
)
def test_decompression_bomb_is_refused_fast(data):
    started = time.perf_counter()
    with pytest.raises(InvalidInput, match="30000x30000 pixels, more than the limit"):
        inspect_image(data, "bomb.png", max_pixels=MAX_PIXELS)

    assert time.perf_counter() - started < 0.1


def test_decompression_bomb_past_pillows_own_limit_is_refused():
    # With a limit above Pillow's, Pillow's DecompressionBombError (over 2 x MAX_IMAGE_PIXELS) still wins.
    with pytest.raises(InvalidInput, match="more pixels than can be decoded safely"):
        inspect_image(make_declared_png(30_000, 30_000), "bomb.png", max_pixels=10**12)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP"])
def test_pictures_over_max_pixels_are_refused(fmt):
    data = make_image(size=(100, 60), fmt=fmt)

    with pytest.raises(InvalidInput, match="100x60 pixels"):
        inspect_image(data, "big", max_pixels=5_999)
    assert inspect_image(data, "big", max_pixels=6_000).width == 100


def test_inspect_image_is_fast_on_small_pictures():
    data = make_image(size=(28, 28), mode="L")
    started = time.perf_counter()
    for _ in range(300):
        inspect_image(data, "mnist/0/1.png", max_pixels=MAX_PIXELS)

    # About 50 microseconds each on a laptop; the bound only catches a gross regression on a busy machine.
    assert (time.perf_counter() - started) / 300 < 0.001


def _shape(*sizes, gray=False, repeat=1):
    return DatasetShape.from_infos([(w, h, gray) for w, h in sizes] * repeat)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        pytest.param(_shape((28, 28), gray=True, repeat=100), (28, "gray", "stretch"), id="mnist"),
        pytest.param(_shape((32, 32), repeat=100), (32, "rgb", "stretch"), id="cifar"),
        pytest.param(
            _shape((500, 375), (375, 500), (500, 333), (480, 360), (400, 400), (500, 400), repeat=10),
            (224, "rgb", "center_crop"),
            id="photos",
        ),
        pytest.param(
            _shape((1200, 300), (300, 900), (400, 400), (1000, 250), (250, 1000), repeat=10),
            (224, "rgb", "letterbox"),
            id="panoramas-and-portraits",
        ),
        pytest.param(_shape((640, 480), repeat=20), (224, "rgb", "stretch"), id="one-camera"),
        pytest.param(_shape((10, 12), gray=True), (28, "gray", "stretch"), id="tiny-icons"),
        pytest.param(_shape((40, 40)), (32, "rgb", "stretch"), id="tie-goes-to-smaller"),
        pytest.param(_shape((60, 70), (70, 60)), (64, "rgb", "center_crop"), id="snaps-to-nearest"),
    ],
)
def test_choose_policy(shape, expected):
    policy = choose_policy(shape)

    assert (policy.image_size, policy.color, policy.resize) == expected


def test_choose_policy_picks_rgb_when_some_pictures_have_colour():
    infos = [(28, 28, True)] * 90 + [(28, 28, False)] * 10

    assert choose_policy(DatasetShape.from_infos(infos)).color == "rgb"


def test_choose_policy_needs_pictures():
    with pytest.raises(InvalidInput, match="no accepted pictures"):
        choose_policy(DatasetShape.from_infos([]))


def test_dataset_shape_from_infos():
    shape = DatasetShape.from_infos([(10, 20, True), (30, 40, False)])

    assert shape == DatasetShape(widths=(10, 30), heights=(20, 40), gray_fraction=0.5)


def test_policy_round_trips_through_json():
    policy = PreprocessingPolicy(image_size=96, color="gray", resize="letterbox")

    assert PreprocessingPolicy.from_dict(json.loads(json.dumps(policy.to_dict()))) == policy


@pytest.mark.parametrize(
    "d",
    [
        pytest.param({"image_size": 0, "color": "rgb", "resize": "stretch"}, id="size-zero"),
        pytest.param({"image_size": 32.5, "color": "rgb", "resize": "stretch"}, id="size-float"),
        pytest.param({"image_size": 32, "color": "cmyk", "resize": "stretch"}, id="color"),
        pytest.param({"image_size": 32, "color": "rgb", "resize": "zoom"}, id="resize"),
        pytest.param({"image_size": 32, "color": "rgb"}, id="missing-key"),
        pytest.param({"image_size": 32, "color": "rgb", "resize": "stretch", "x": 1}, id="unknown-key"),
    ],
)
def test_policy_refuses_bad_values(d):
    with pytest.raises(InvalidInput):
        PreprocessingPolicy.from_dict(d)


def _three_bands(width=90, height=30):
    """Red, green and blue vertical thirds."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    third = width // 3
    pixels[:, :third, 0] = 255
    pixels[:, third : 2 * third, 1] = 255
    pixels[:, 2 * third :, 2] = 255
    return Image.fromarray(pixels)


@pytest.mark.parametrize("resize", ["stretch", "letterbox", "center_crop"])
@pytest.mark.parametrize(("color", "channels"), [("gray", 1), ("rgb", 3)])
@pytest.mark.parametrize("source_size", [(90, 30), (30, 90), (28, 28), (7, 300)])
def test_preprocess_shapes(resize, color, channels, source_size):
    policy = PreprocessingPolicy(image_size=28, color=color, resize=resize)

    array = preprocess(_three_bands(*source_size), policy)

    assert array.shape == (28, 28, channels)
    assert array.dtype == np.uint8
    assert array.flags.writeable


def test_preprocess_stretch_keeps_everything():
    array = preprocess(_three_bands(), PreprocessingPolicy(30, "rgb", "stretch"))

    assert array[15, 2, 0] == 255 and array[15, 15, 1] == 255 and array[15, 27, 2] == 255


def test_preprocess_center_crop_keeps_the_middle():
    array = preprocess(_three_bands(), PreprocessingPolicy(30, "rgb", "center_crop"))

    assert (array[:, :, 1] == 255).all()
    assert (array[:, :, [0, 2]] == 0).all()


def test_preprocess_letterbox_pads_with_black_and_centers():
    white = Image.new("RGB", (64, 32), (255, 255, 255))

    array = preprocess(white, PreprocessingPolicy(32, "rgb", "letterbox"))

    assert (array[:8] == 0).all() and (array[24:] == 0).all()
    assert (array[8:24] == 255).all()


def test_preprocess_accepts_any_mode():
    rgba = Image.new("RGBA", (10, 10), (*RED, 0))

    array = preprocess(rgba, PreprocessingPolicy(28, "rgb", "stretch"))

    assert (array == 255).all()  # transparent composited on white, as decode_image does


def test_load_for_model_is_decode_then_preprocess():
    data = make_gradient((50, 40), "PNG")
    policy = PreprocessingPolicy(32, "rgb", "letterbox")

    expected = preprocess(decode_image(data, "a.png", max_pixels=MAX_PIXELS), policy)

    np.testing.assert_array_equal(load_for_model(data, "a.png", policy, max_pixels=MAX_PIXELS), expected)


def test_load_for_model_gray():
    array = load_for_model(make_image(), "a.png", PreprocessingPolicy(28, "gray", "stretch"), max_pixels=MAX_PIXELS)

    assert array.shape == (28, 28, 1)
    assert abs(int(array[0, 5, 0]) - RED_AS_GRAY) <= 1


def _open(data):
    return Image.open(io.BytesIO(data))


@pytest.mark.parametrize(
    ("data", "size", "fmt", "expected_size"),
    [
        pytest.param(make_gradient((400, 200), "JPEG"), 64, "JPEG", (64, 32), id="jpeg-landscape"),
        pytest.param(make_noise((300, 600), "PNG"), 100, "JPEG", (50, 100), id="png-portrait-to-jpeg"),
        pytest.param(
            make_gradient((200, 100), "JPEG", exif=exif_orientation(6)),
            100,
            "JPEG",
            (50, 100),
            id="exif-rotated",
        ),
        pytest.param(make_image(size=(28, 28), mode="L"), 128, "PNG", (28, 28), id="tiny-never-upscaled"),
        pytest.param(make_image((*RED, 100), (300, 300), mode="RGBA"), 64, "PNG", (64, 64), id="transparent"),
        pytest.param(make_image(size=(300, 200), mode="I;16"), 60, "JPEG", (60, 40), id="16bit"),
        pytest.param(make_animation(size=(200, 100)), 50, "JPEG", (50, 25), id="gif-animated"),
        pytest.param(make_image(size=(300, 300), fmt="JPEG", mode="CMYK"), 64, "JPEG", (64, 64), id="cmyk"),
    ],
)
def test_make_thumbnail(data, size, fmt, expected_size):
    thumbnail = _open(make_thumbnail(data, "cat/1", size=size, max_pixels=MAX_PIXELS))

    assert (thumbnail.format, thumbnail.size) == (fmt, expected_size)
    assert thumbnail.mode in ("L", "RGB", "RGBA")


def test_thumbnail_keeps_transparency():
    thumbnail = _open(make_thumbnail(make_image((*RED, 0), (200, 200), mode="RGBA"), "a", size=32, max_pixels=10**6))

    assert thumbnail.mode == "RGBA"
    assert thumbnail.getpixel((5, 5))[3] == 0


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"not a picture", id="text"),
        pytest.param(make_declared_png(30_000, 30_000), id="bomb"),
    ],
)
def test_thumbnail_refuses_what_inspect_refuses(data):
    with pytest.raises(InvalidInput):
        make_thumbnail(data, "cat/1", size=64, max_pixels=MAX_PIXELS)
