"""The Versions tab: every version of the model (how it was made, its classes, its accuracy), making an earlier
one answer again (a rollback), the quick updates (and "Update the model now"), and downloading one as a file."""

from __future__ import annotations

import re

import streamlit as st

from ui import api_client as api
from ui import state
from ui.api_client import ApiError
from ui.api_types import Model, Version
from ui.components import notice, percent, show_problem
from ui.sections.model_update import render_updates

SOURCE_WORDS = {"training": "training", "expansion": "quick update", "rollback": "rollback"}
FORMATS = {
    "keras": ("Keras (.keras): for Python with TensorFlow", "keras"),
    "tflite": ("TensorFlow Lite (.tflite): for phones and small devices", "tflite"),
}
COLUMN_WIDTHS = [1, 1.2, 1.3, 3, 1.1, 1.5, 1.5]
HEADINGS = ["Version", "Answering", "Made by", "Classes", "Accuracy", "Created", ""]


def version_words(version: Version) -> str:
    """'Version 3 (answering now) · 92.0% right'."""
    words = f"Version {version.version}"
    if version.active:
        words += " (answering now)"
    if version.metrics.accuracy is not None:
        words += f" · {percent(version.metrics.accuracy)} right"
    return words


def choose_version(versions: list[Version], key: str, label: str = "Version") -> Version:
    """A version picker that starts on the one answering now."""
    by_number = {v.version: v for v in versions}
    default = next((i for i, v in enumerate(versions) if v.active), 0)
    number = st.selectbox(
        label, list(by_number), index=default, key=key, format_func=lambda n: version_words(by_number[n])
    )
    return by_number[number]


def render_versions(token: str, model: Model) -> None:
    try:
        versions = api.list_versions(token, model.id)
    except ApiError as err:
        show_problem(err)
    if not versions:
        st.info(
            "No versions yet. Each finished training makes one; you will then be able to go back to an earlier "
            "one and download any of them."
        )
        return
    st.caption(
        "Each training makes a new version. The one answering is used for every request; if a new version does "
        "worse, make an earlier one answer again."
    )
    render_table(token, model, versions)
    render_updates(token, model)
    render_export(token, model, versions)


def render_table(token: str, model: Model, versions: list[Version]) -> None:
    """One row per version with its "Make active" button (a table cannot hold buttons)."""
    for column, heading in zip(st.columns(COLUMN_WIDTHS), HEADINGS, strict=True):
        if heading:
            column.markdown(f"**{heading}**")
    for version in versions:
        row = st.columns(COLUMN_WIDTHS, vertical_alignment="center")
        row[0].write(f"{version.version}")
        if version.active:
            row[1].markdown(":green[:material/check_circle: now]")
        row[2].write(SOURCE_WORDS.get(version.source, version.source))
        names = ", ".join(version.classes[:6]) + (" …" if len(version.classes) > 6 else "")
        row[3].write(f"{len(version.classes)}: {names}")
        row[4].write(percent(version.metrics.accuracy))
        row[5].write(version.created_at.strftime("%Y-%m-%d %H:%M"))
        if version.active:
            continue
        if row[6].button("Make active", key=f"versions.activate.{version.version}", icon=":material/restore:"):
            try:
                api.activate_version(token, model.id, version.version)
            except ApiError as err:
                show_problem(err)
            notice(f"Version {version.version} answers from now on.")
            st.rerun()


def render_export(token: str, model: Model, versions: list[Version]) -> None:
    """Ask the API for the file, then offer it: the export is made on request, so it is not fetched for nothing."""
    st.subheader("Download a version", anchor=False)
    version_column, format_column, button_column = st.columns([2, 2, 1], vertical_alignment="bottom")
    with version_column:
        version = choose_version(versions, key=state.keyed("versions.export_version", model.id))
    fmt = format_column.selectbox("Format", list(FORMATS), format_func=lambda f: FORMATS[f][0], key="versions.format")
    export_key = state.keyed(state.EXPORT_FILE, model.id)
    if button_column.button("Prepare the file", key="versions.export", icon=":material/package_2:"):
        try:
            data = api.export_version(token, model.id, version.version, fmt)
        except ApiError as err:
            show_problem(err, stop=False)
            return
        st.session_state[export_key] = (version.version, fmt, data)  # one file at a time: they can be large
    ready = st.session_state.get(export_key)
    if ready and ready[:2] == (version.version, fmt):
        extension = FORMATS[fmt][1]
        st.download_button(
            f"Download version {version.version} (.{extension})",
            data=ready[2],
            file_name=f"{file_stem(model.name)}-v{version.version}.{extension}",
            mime="application/octet-stream",
            key="versions.download",
            type="primary",
            icon=":material/download:",
            on_click="ignore",
        )


def file_stem(name: str) -> str:
    """'My Flowers!' -> 'my-flowers' (a file name any system accepts)."""
    return re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-") or "model"
