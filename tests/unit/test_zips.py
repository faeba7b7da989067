import collections
import struct
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipelines import zips
from pipelines.errors import InvalidInput
from pipelines.zips import (
    ZipEntry,
    ZipLimits,
    plan_zip,
    read_entry,
    stratified_split,
    validate_class_name,
)
from tests.factories import make_image, make_zip, zip_info

PICTURE = make_image()


def _labels(plan):
    return collections.Counter(entry.label for entry in plan.entries)


def _splits(plan):
    return collections.Counter((entry.label, entry.split) for entry in plan.entries)


def _rejected(plan):
    return {reject.name: reject.reason for reject in plan.rejects}


def _patch_central(path: Path, name: str, offset: int, fmt: str, value: int) -> None:
    """Overwrite one field of `name`'s central-directory record (offsets per the zip specification)."""
    data = bytearray(path.read_bytes())
    record = data.rfind(name.encode()) - 46
    assert data[record : record + 4] == b"PK\x01\x02"
    struct.pack_into(fmt, data, record + offset, value)
    path.write_bytes(bytes(data))


# Layouts


def test_class_folders(tmp_path):
    path = make_zip(tmp_path, {"cat": 3, "dog": 2})

    plan = plan_zip(path)

    assert plan.layout == "class_folders"
    assert _splits(plan) == {("cat", None): 3, ("dog", None): 2}
    assert (plan.rejects, plan.empty_classes, plan.ignored) == ((), (), 0)
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        for entry in plan.entries:
            assert infos[entry.index].filename == entry.name
            assert infos[entry.index].file_size == entry.size


def test_every_picture_of_a_made_zip_is_distinct(tmp_path):
    path = make_zip(tmp_path, {"cat": 20, "dog": 20})
    plan = plan_zip(path)

    with zipfile.ZipFile(path) as archive:
        contents = {read_entry(archive, entry, ZipLimits()) for entry in plan.entries}
    assert len(contents) == 40


@pytest.mark.parametrize(
    ("train", "test"),
    [
        pytest.param("train", "test", id="train-test"),
        pytest.param("Training", "Testing", id="training-testing-any-case"),
        pytest.param("train", "val", id="val-counts-as-test"),
        pytest.param("TRAIN", "Validation", id="validation-counts-as-test"),
    ],
)
def test_train_test_layout(tmp_path, train, test):
    plan = plan_zip(make_zip(tmp_path, {train: {"cat": 3, "dog": 2}, test: {"cat": 1, "dog": 1}}))

    assert plan.layout == "train_test"
    assert _splits(plan) == {("cat", "train"): 3, ("dog", "train"): 2, ("cat", "test"): 1, ("dog", "test"): 1}
    assert plan.rejects == ()


def test_train_test_with_both_test_and_val_folders(tmp_path):
    plan = plan_zip(make_zip(tmp_path, {"train": {"cat": 2}, "test": {"cat": 1}, "val": {"cat": 1}}))

    assert _splits(plan) == {("cat", "train"): 2, ("cat", "test"): 2}


def test_train_test_misplaced_files_are_rejected(tmp_path):
    extra = {
        "train/loose.png": PICTURE,
        "extra/cat/1.png": PICTURE,
        "top.png": PICTURE,
        "train/cat/kittens/1.png": PICTURE,
    }

    plan = plan_zip(make_zip(tmp_path, {"train": {"cat": 2}, "test": {"cat": 1}}, extra=extra))

    rejected = _rejected(plan)
    assert set(rejected) == set(extra)
    assert "directly in train/" in rejected["train/loose.png"]
    assert "neither train/ nor test/" in rejected["extra/cat/1.png"]
    assert "outside train/ and test/" in rejected["top.png"]
    assert "sub-folder of the class folder train/cat/" in rejected["train/cat/kittens/1.png"]
    assert _splits(plan) == {("cat", "train"): 2, ("cat", "test"): 1}


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        pytest.param({"flowers": {"daisy": 2, "rose": 3}}, {"daisy": 2, "rose": 3}, id="one-wrapper"),
        pytest.param({"flowers": {"flowers": {"daisy": 2, "rose": 3}}}, {"daisy": 2, "rose": 3}, id="doubled"),
    ],
)
def test_wrapping_folders_are_looked_through(tmp_path, layout, expected):
    plan = plan_zip(make_zip(tmp_path, layout, directories=True))

    assert plan.layout == "class_folders"
    assert _labels(plan) == expected
    assert (plan.rejects, plan.empty_classes) == ((), ())


def test_wrapper_around_train_test(tmp_path):
    plan = plan_zip(make_zip(tmp_path, {"mnist_png": {"training": {"0": 2, "1": 2}, "testing": {"0": 1, "1": 1}}}))

    assert plan.layout == "train_test"
    assert _splits(plan) == {("0", "train"): 2, ("1", "train"): 2, ("0", "test"): 1, ("1", "test"): 1}


def test_files_beside_a_wrapper_are_rejected(tmp_path):
    extra = {"README.md": b"my flowers", "flowers/LICENSE": b"CC-BY"}

    plan = plan_zip(make_zip(tmp_path, {"flowers": {"daisy": 2, "rose": 2}}, extra=extra))

    assert _labels(plan) == {"daisy": 2, "rose": 2}
    assert "at the top of the zip" in _rejected(plan)["README.md"]
    assert "directly in flowers/" in _rejected(plan)["flowers/LICENSE"]


def test_one_class_with_a_sub_folder_is_not_a_wrapper(tmp_path):
    plan = plan_zip(make_zip(tmp_path, {"cat": 3, "dog": 2}, extra={"cat/kittens/1.png": PICTURE}))

    assert _labels(plan) == {"cat": 3, "dog": 2}
    assert "sub-folder of the class folder cat/" in _rejected(plan)["cat/kittens/1.png"]


def test_root_files_are_rejected_in_class_folders(tmp_path):
    plan = plan_zip(make_zip(tmp_path, {"cat": 1, "dog": 1}, extra={"stray.jpg": PICTURE}))

    assert "at the top of the zip, outside any class folder" in _rejected(plan)["stray.jpg"]


def test_directories_are_skipped(tmp_path):
    plan = plan_zip(make_zip(tmp_path, {"cat": 2, "dog": 2}, directories=True))

    assert (plan.rejects, plan.ignored, len(plan.entries)) == ((), 0, 4)


def test_any_extension_is_kept_for_the_importer_to_judge(tmp_path):
    plan = plan_zip(make_zip(tmp_path, {"cat": 1}, extra={"cat/photo.dat": PICTURE, "cat/notes.txt": b"hi"}))

    assert _labels(plan) == {"cat": 3}


def test_backslash_separators_are_folders(tmp_path):
    plan = plan_zip(make_zip(tmp_path, {}, extra={"cat\\1.png": PICTURE, "dog\\2.png": PICTURE}))

    assert _labels(plan) == {"cat": 1, "dog": 1}


# Junk and hostile entries


@pytest.mark.parametrize(
    "junk",
    [
        pytest.param("__MACOSX/cat/._0.png", id="macosx"),
        pytest.param("cat/._0.png", id="apple-double"),
        pytest.param("cat/.DS_Store", id="ds-store"),
        pytest.param(".DS_Store", id="ds-store-root"),
        pytest.param("dog/Thumbs.db", id="thumbs-db"),
        pytest.param("desktop.ini", id="desktop-ini"),
        pytest.param(".git/config", id="hidden-folder"),
        pytest.param("cat/.hidden/1.png", id="hidden-sub-folder"),
        pytest.param("flowers/@eaDir/1.png", id="synology"),
    ],
)
def test_os_junk_is_ignored_silently(tmp_path, junk):
    plan = plan_zip(make_zip(tmp_path, {"cat": 1, "dog": 1}, extra={junk: b"junk"}))

    assert (plan.ignored, plan.rejects) == (1, ())
    assert _labels(plan) == {"cat": 1, "dog": 1}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("../evil.png", id="parent"),
        pytest.param("cat/../../evil.png", id="parent-inside"),
        pytest.param("/etc/passwd", id="absolute"),
        pytest.param("/cat/1.png", id="absolute-class"),
        pytest.param("C:/Windows/evil.png", id="drive-letter"),
        pytest.param("C:\\evil.png", id="drive-letter-backslash"),
        pytest.param("..\\evil.png", id="parent-backslash"),
        pytest.param("\\\\server\\share\\evil.png", id="unc"),
        pytest.param("../", id="parent-directory-entry"),
    ],
)
def test_zip_slip_names_are_rejected(tmp_path, name):
    plan = plan_zip(make_zip(tmp_path, {"cat": 1, "dog": 1}, extra={name: PICTURE}))

    assert "points outside the zip" in _rejected(plan)[name]
    assert _labels(plan) == {"cat": 1, "dog": 1}


def test_symlinks_are_rejected(tmp_path):
    plan = plan_zip(make_zip(tmp_path, {"cat": 1}, extra={zip_info("cat/link.png", symlink=True): b"/etc/passwd"}))

    assert "link" in _rejected(plan)["cat/link.png"]
    assert _labels(plan) == {"cat": 1}


@pytest.mark.parametrize("name", ["cat/more.zip", "cat/MORE.ZIP", "cat/x.tar.gz", "cat/x.tgz", "cat/x.7z", "cat/x.rar"])
def test_nested_archives_are_rejected(tmp_path, name):
    plan = plan_zip(make_zip(tmp_path, {"cat": 1}, extra={name: b"PK\x03\x04"}))

    assert "zip inside a zip is not read; unzip it first" in _rejected(plan)[name]


def test_encrypted_entries_are_rejected(tmp_path):
    path = make_zip(tmp_path, {"cat": 1}, extra={"cat/secret.png": PICTURE})
    _patch_central(path, "cat/secret.png", 8, "<H", 0x1)  # zipfile cannot write encrypted entries

    assert "password" in _rejected(plan_zip(path))["cat/secret.png"]


def test_unreadable_compression_is_rejected(tmp_path):
    # Windows Explorer writes Deflate64 (method 9) for large files; Python's zipfile cannot read it.
    path = make_zip(tmp_path, {"cat": 1}, extra={"cat/big.png": PICTURE})
    _patch_central(path, "cat/big.png", 10, "<H", 9)

    assert "method 9" in _rejected(plan_zip(path))["cat/big.png"]


def test_zip_bomb_is_refused_whole(tmp_path):
    path = make_zip(tmp_path, {"cat": 2}, extra={"cat/blank.bmp": bytes(20 * 2**20)})

    with pytest.raises(InvalidInput, match="zip bomb"):
        plan_zip(path)


def test_one_bomb_entry_among_real_data_is_rejected(tmp_path):
    noise = np.random.default_rng(0).bytes(3 * 2**20)  # incompressible, so the whole zip's ratio is normal
    extra = {"dog/noise.png": noise, "cat/blank.bmp": bytes(2 * 2**20)}

    plan = plan_zip(make_zip(tmp_path, {"cat": 1, "dog": 1}, extra=extra))

    assert "zip bomb" in _rejected(plan)["cat/blank.bmp"]
    assert _labels(plan) == {"cat": 1, "dog": 2}


def test_small_blank_pictures_are_not_taken_for_bombs(tmp_path):
    # A blank 500 KB BMP deflates about 1000:1, but that little data cannot hurt: under ratio_floor.
    plan = plan_zip(make_zip(tmp_path, {"cat": 1}, extra={"cat/blank.bmp": bytes(500_000)}))

    assert plan.rejects == ()


def test_entry_over_the_size_limit_is_rejected(tmp_path):
    extra = {"cat/huge.png": np.random.default_rng(1).bytes(2_000)}

    plan = plan_zip(make_zip(tmp_path, {"cat": 1}, extra=extra), ZipLimits(max_entry_uncompressed=1_000))

    assert "more than the" in _rejected(plan)["cat/huge.png"]


def test_too_many_entries_is_refused(tmp_path):
    with pytest.raises(InvalidInput, match="holds 6 files and folders, more than the 5"):
        plan_zip(make_zip(tmp_path, {"cat": 3, "dog": 3}), ZipLimits(max_entries=5))


def test_entry_count_is_read_before_parsing_even_for_zip64(tmp_path, monkeypatch):
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 2)  # force the zip64 records on a small zip
    path = make_zip(tmp_path, {"cat": 3, "dog": 3})
    monkeypatch.undo()
    data = bytearray(path.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, end + 8, 0xFFFF, 0xFFFF)  # "see the zip64 record", as big zips say
    path.write_bytes(bytes(data))

    with path.open("rb") as file:
        assert zips._declared_entry_count(file) == 6
    assert len(plan_zip(path).entries) == 6
    with pytest.raises(InvalidInput, match="more than the 5"):
        plan_zip(path, ZipLimits(max_entries=5))


def test_total_size_over_the_limit_is_refused(tmp_path):
    with pytest.raises(InvalidInput, match="Split it into several zips"):
        plan_zip(make_zip(tmp_path, {"cat": 3}), ZipLimits(max_total_uncompressed=100))


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="zero-bytes"),
        pytest.param(b"this is a text file, renamed .zip", id="text"),
        pytest.param(PICTURE, id="picture"),
        pytest.param(b"PK\x05\x06" + bytes(18), id="empty-end-record-only"),
    ],
)
def test_not_a_zip_is_refused(tmp_path, content):
    path = tmp_path / "upload.zip"
    path.write_bytes(content)

    with pytest.raises(InvalidInput, match="'upload.zip'"):
        plan_zip(path)


def test_truncated_zip_is_refused(tmp_path):
    path = make_zip(tmp_path, {"cat": 5, "dog": 5})
    path.write_bytes(path.read_bytes()[:-100])

    with pytest.raises(InvalidInput, match="is not a zip file, or it is damaged"):
        plan_zip(path)


def test_zip_without_class_folders_explains_the_layouts(tmp_path):
    path = make_zip(tmp_path, {}, extra={"1.png": PICTURE, "2.png": PICTURE})

    with pytest.raises(InvalidInput, match="no class folders") as raised:
        plan_zip(path)
    assert "train/cat/1.jpg" in raised.value.detail and "cat/1.jpg, dog/2.jpg" in raised.value.detail


def test_empty_zip_is_refused(tmp_path):
    with pytest.raises(InvalidInput, match="empty zip"):
        plan_zip(make_zip(tmp_path, {}))


# Names


@pytest.mark.parametrize(
    ("raw_name", "label"),
    [
        pytest.param(b"caf\x82/1.png", "caf\u00e9", id="cp437"),
        pytest.param("crème/1.png".encode(), "crème", id="utf8-without-flag"),
    ],
)
def test_names_without_the_utf8_flag(tmp_path, raw_name, label):
    plan = plan_zip(make_zip(tmp_path, {}, extra={zip_info(raw_name=raw_name): PICTURE}))

    assert _labels(plan) == {label: 1}


def test_names_in_other_encodings_do_not_crash(tmp_path):
    raw_name = "猫/1.png".encode("shift_jis")

    path = make_zip(tmp_path, {}, extra={zip_info(raw_name=raw_name): PICTURE})
    plan = plan_zip(path)

    assert len(plan.entries) == 1 and plan.entries[0].label
    with zipfile.ZipFile(path) as archive:
        assert read_entry(archive, plan.entries[0], ZipLimits()) == PICTURE


def test_unicode_class_names(tmp_path):
    plan = plan_zip(make_zip(tmp_path, {"crème brûlée": 2, "猫": 2, "cre\u0300me": 1, "crème": 1}))

    assert _labels(plan) == {"crème brûlée": 2, "猫": 2, "crème": 2}  # NFD and NFC folders are one class


@pytest.mark.parametrize(
    "folder",
    [
        pytest.param("bad\x07name", id="control-character"),
        pytest.param("tab\tname", id="tab"),
        pytest.param("   ", id="blank"),
        pytest.param("x" * 101, id="too-long"),
    ],
)
def test_invalid_class_folder_names_reject_their_files(tmp_path, folder):
    extra = {f"{folder}/1.png": PICTURE, f"{folder}/2.png": PICTURE}

    plan = plan_zip(make_zip(tmp_path, {"cat": 1}, extra=extra, directories=True))

    rejected = _rejected(plan)
    assert set(rejected) == set(extra)
    assert all(f"Its folder {folder!r} cannot be a class name" in reason for reason in rejected.values())
    assert _labels(plan) == {"cat": 1}
    assert plan.empty_classes == ()


def test_empty_class_folders_are_reported(tmp_path):
    extra = {"bird/.DS_Store": b"", "fish/more.zip": b"PK", zip_info("owl/", directory=True): b""}

    plan = plan_zip(make_zip(tmp_path, {"cat": 2, "dog": 0}, extra=extra, directories=True))

    assert plan.empty_classes == ("bird", "dog", "fish", "owl")
    assert _labels(plan) == {"cat": 2}
    assert set(_rejected(plan)) == {"fish/more.zip"}


@pytest.mark.parametrize(
    ("name", "cleaned"),
    [
        pytest.param("cat", "cat", id="plain"),
        pytest.param("  dog ", "dog", id="stripped"),
        pytest.param("crème brûlée", "crème brûlée", id="accents"),
        pytest.param("cre\u0300me", "crème", id="nfd-to-nfc"),
        pytest.param("猫", "猫", id="cjk"),
        pytest.param("x" * 100, "x" * 100, id="100-chars"),
        pytest.param("...dots", "...dots", id="leading-dots"),
    ],
)
def test_validate_class_name_accepts(name, cleaned):
    assert validate_class_name(name) == cleaned


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("  ", id="blank"),
        pytest.param(".", id="dot"),
        pytest.param("..", id="dot-dot"),
        pytest.param("a/b", id="slash"),
        pytest.param("a\\b", id="backslash"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("a\nb", id="newline"),
        pytest.param("a\u2028b", id="line-separator"),
        pytest.param("x" * 101, id="too-long"),
    ],
)
def test_validate_class_name_refuses(name):
    with pytest.raises(InvalidInput, match="cannot be used as a class name"):
        validate_class_name(name)


# Reading entries


def test_read_entry_returns_the_bytes(tmp_path):
    path = make_zip(tmp_path, {"cat": 2}, extra={"cat/known.png": PICTURE})
    plan = plan_zip(path)
    known = next(entry for entry in plan.entries if entry.name == "cat/known.png")

    with zipfile.ZipFile(path) as archive:
        assert read_entry(archive, known, ZipLimits()) == PICTURE


def test_read_entry_has_a_hard_cap(tmp_path):
    path = make_zip(tmp_path, {}, extra={"cat/big.png": bytes(10_000)})
    (entry,) = plan_zip(path).entries

    with zipfile.ZipFile(path) as archive, pytest.raises(InvalidInput, match="more than"):
        read_entry(archive, entry, ZipLimits(max_entry_uncompressed=1_000))


def test_read_entry_with_a_lying_size_fails_loudly(tmp_path):
    # Declares 100 bytes, holds 5 MB of zeros: zipfile stops at the declared size, then the CRC fails.
    path = make_zip(tmp_path, {}, extra={"cat/liar.png": bytes(5 * 2**20)})
    _patch_central(path, "cat/liar.png", 24, "<I", 100)
    (entry,) = plan_zip(path).entries

    with zipfile.ZipFile(path) as archive, pytest.raises(InvalidInput, match="the zip is damaged"):
        read_entry(archive, entry, ZipLimits())


def test_read_entry_of_a_damaged_entry(tmp_path):
    path = make_zip(tmp_path, {}, extra={"cat/1.png": np.random.default_rng(2).bytes(5_000)})
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF  # inside the compressed data
    path.write_bytes(bytes(data))
    (entry,) = plan_zip(path).entries

    with zipfile.ZipFile(path) as archive, pytest.raises(InvalidInput, match="could not be unpacked"):
        read_entry(archive, entry, ZipLimits())


def test_read_entry_refuses_an_entry_of_another_zip(tmp_path):
    path = make_zip(tmp_path, {"cat": 1})
    stranger = ZipEntry(name="dog/9.png", index=0, label="dog", split=None, size=1)

    with zipfile.ZipFile(path) as archive, pytest.raises(ValueError, match="plan and zip do not match"):
        read_entry(archive, stranger, ZipLimits())


def test_planning_many_entries_is_fast(tmp_path):
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for number in range(10_000):
            archive.writestr(f"data/{'train' if number % 7 else 'test'}/{number % 10}/{number}.png", b"x")

    started = time.process_time()
    plan = plan_zip(path)

    # About 5 ms per 1,000 entries on a quiet machine; the bound only catches a gross regression.
    assert time.process_time() - started < 1.0
    assert plan.layout == "train_test" and len(plan.entries) == 10_000


# Splitting


def test_stratified_split_is_deterministic():
    labels = ["cat"] * 50 + ["dog"] * 30

    first = stratified_split(labels, seed=7)

    assert first == stratified_split(labels, seed=7)
    assert first != stratified_split(labels, seed=8)
    assert set(first) == {"train", "test"}


@pytest.mark.parametrize(
    ("count", "tests"),
    [
        pytest.param(100, 20, id="100"),
        pytest.param(10, 2, id="10"),
        pytest.param(8, 2, id="8-rounds-up"),
        pytest.param(7, 1, id="7"),
        pytest.param(5, 1, id="5"),
        pytest.param(4, 1, id="4"),
        pytest.param(3, 1, id="3"),
        pytest.param(2, 0, id="2"),
        pytest.param(1, 0, id="1"),
    ],
)
def test_stratified_split_proportions(count, tests):
    splits = stratified_split(["cat"] * count + ["dog"] * 100)

    assert splits[:count].count("test") == tests
    assert splits[count:].count("test") == 20


def test_stratified_split_gives_at_least_one_test_item_from_five():
    assert stratified_split(["cat"] * 5, test_fraction=0.05).count("test") == 1


def test_stratified_split_never_takes_a_whole_class():
    assert stratified_split(["cat"] * 2, test_fraction=0.9).count("train") == 1


def test_stratified_split_of_one_class_ignores_the_others():
    cats = ["cat"] * 40

    alone = stratified_split(cats, seed=3)
    mixed = stratified_split(["dog"] * 25 + cats + ["bird"] * 9, seed=3)

    assert mixed[25:65] == alone


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_stratified_split_refuses_bad_fractions(fraction):
    with pytest.raises(InvalidInput, match="test fraction"):
        stratified_split(["cat"] * 5, test_fraction=fraction)
