"""The error hierarchy survives the pickling Ray does between processes, keyword-only fields included."""

from __future__ import annotations

import pickle
from types import ModuleType

import pytest

from pipelines import errors
from pipelines.errors import ERRORS, ClassiflyError, InvalidInput


@pytest.fixture(scope="module")
def cloudpickle() -> ModuleType:
    try:
        import cloudpickle
    except ImportError:  # Ray ships its own copy, which is the one that pickles our errors in production
        from ray import cloudpickle
    return cloudpickle


def _roundtrip_args() -> list:
    return [pytest.param(cls, id=cls.__name__) for cls in ERRORS]


def _example(cls: type[ClassiflyError]) -> ClassiflyError:
    return cls("Image 'cat/7.gif' is unreadable. Remove it.", field="files", extra={"used": 3, "names": ["a"]})


def _assert_same(copy: BaseException, original: ClassiflyError) -> None:
    assert type(copy) is type(original)
    assert copy.detail == original.detail
    assert copy.field == original.field
    assert copy.extra == original.extra
    assert str(copy) == str(original)
    assert (copy.code, copy.status, copy.title) == (original.code, original.status, original.title)


@pytest.mark.parametrize("cls", _roundtrip_args())
def test_pickle_roundtrip_keeps_class_and_fields(cls: type[ClassiflyError]) -> None:
    original = _example(cls)

    _assert_same(pickle.loads(pickle.dumps(original)), original)


@pytest.mark.parametrize("cls", _roundtrip_args())
def test_cloudpickle_roundtrip_keeps_class_and_fields(cls: type[ClassiflyError], cloudpickle: ModuleType) -> None:
    original = _example(cls)

    _assert_same(cloudpickle.loads(cloudpickle.dumps(original)), original)


@pytest.mark.parametrize("cls", _roundtrip_args())
def test_roundtrip_without_optional_fields(cls: type[ClassiflyError]) -> None:
    copy = pickle.loads(pickle.dumps(cls("plain")))

    assert (type(copy), copy.detail, copy.field, copy.extra) == (cls, "plain", None, {})


def test_extra_is_copied_not_shared() -> None:
    extra = {"used": 1}
    error = ClassiflyError("x", extra=extra)
    extra["used"] = 2

    assert error.extra == {"used": 1}


def test_invalid_input_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="bad"):
        raise InvalidInput("bad")


def test_errors_registry_lists_every_subclass_once() -> None:
    defined = {
        value for value in vars(errors).values() if isinstance(value, type) and issubclass(value, ClassiflyError)
    }

    assert set(ERRORS) == defined
    assert len(ERRORS) == len(defined)
    assert all(issubclass(cls, ClassiflyError) for cls in ERRORS)


@pytest.mark.parametrize("cls", [pytest.param(cls, id=cls.__name__) for cls in ERRORS[1:]])
def test_every_subclass_has_its_own_code_and_an_http_status(cls: type[ClassiflyError]) -> None:
    assert cls.code != ClassiflyError.code
    assert 400 <= cls.status < 600
    assert cls.title
