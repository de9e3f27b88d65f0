"""pytriton_torch.client re-exports PyTriton's clients, imported on first use."""

from __future__ import annotations

import sys

import pytest


def test_names_are_pytritons_classes() -> None:
    pytriton_client = pytest.importorskip("pytriton.client")
    pytriton_exceptions = pytest.importorskip("pytriton.client.exceptions")
    import pytriton_torch.client as ours
    import pytriton_torch.client.exceptions as our_exceptions

    for name in ours.__all__:
        assert getattr(ours, name) is getattr(pytriton_client, name)
    for name in our_exceptions.__all__:
        assert getattr(our_exceptions, name) is getattr(pytriton_exceptions, name)
    public = {n for n in dir(pytriton_client) if n[0].isupper()}
    assert public <= set(ours.__all__)


def test_unknown_name_is_an_attribute_error() -> None:
    import pytriton_torch.client as ours

    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        ours.Nope  # noqa: B018


def test_missing_nvidia_pytriton_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pytriton.client", None)
    with pytest.raises(ImportError, match="pip install nvidia-pytriton"):
        from pytriton_torch.client import ModelClient  # noqa: F401
