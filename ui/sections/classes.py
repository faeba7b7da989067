"""Adding pictures to a class (a new one or an existing one), and renaming or deleting classes."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import api_client as api
from ui import state
from ui.api_client import ApiError
from ui.api_types import ClassInfo, Model
from ui.components import notice, show_problem
from ui.sections.model_update import follow_update

PICTURE_TYPES = ["png", "jpg", "jpeg", "gif", "webp", "bmp", "tif", "tiff"]
NEW_CLASS = "➕ A new class"


def render_add_pictures(token: str, model: Model, classes: list[ClassInfo]) -> None:
    """Upload one or many pictures into a class; a new class is created on the way."""
    with st.expander("Add pictures to a class", icon=":material/add_photo_alternate:"):
        with st.form(state.keyed("add_pictures", model.id), clear_on_submit=True):
            choice = st.selectbox("Class", [NEW_CLASS, *(c.name for c in classes)], key="add.class")
            new_name = st.text_input("Name of the new class", placeholder="e.g. daisy", key="add.new_name")
            files = st.file_uploader("Pictures", type=PICTURE_TYPES, accept_multiple_files=True, key="add.files")
            submitted = st.form_submit_button("Add pictures", type="primary")
        if submitted:
            label = new_name.strip() if choice == NEW_CLASS else choice
            if not label:
                st.error("Name the new class, or choose an existing one.")
            elif not files:
                st.error("Choose one or more pictures first.")
            else:
                _upload(token, model, label, files)
        result = st.session_state.pop(state.keyed(state.UPLOAD_RESULT, model.id), None)
        if result is not None:
            _show_upload_result(result)
        st.divider()
        with st.form(state.keyed("new_class", model.id), clear_on_submit=True):
            st.caption("Or make an empty class now and fill it later:")
            empty_name = st.text_input("Class name", key="add.empty_class")
            if st.form_submit_button("Add class"):
                _create_class(token, model, empty_name.strip())


def _upload(token: str, model: Model, label: str, files: list) -> None:
    try:
        with st.spinner(f"Uploading {len(files)} pictures …"):
            result = api.upload_images(token, model.id, label, [(f.name, f.getvalue()) for f in files])
    except ApiError as err:
        show_problem(err)
    st.session_state[state.keyed(state.UPLOAD_RESULT, model.id)] = result
    follow_update(model.id, result.update_job_id)
    notice(f"Added {result.accepted} pictures to '{label}'.")
    st.rerun()


def _show_upload_result(result) -> None:
    st.write(f"Added {result.accepted}, skipped {result.duplicates} duplicates, refused {result.rejected}.")
    refused = [{"file": r.name, "why": r.reason} for r in result.results if r.status == "rejected"]
    if refused:
        st.dataframe(pd.DataFrame(refused), hide_index=True)


def _create_class(token: str, model: Model, name: str) -> None:
    if not name:
        st.error("Type a name for the class.")
        return
    try:
        api.create_class(token, model.id, name)
    except ApiError as err:
        show_problem(err)
    notice(f"Added the class '{name}'. Add pictures to it above.")
    st.rerun()


def render_manage_classes(token: str, model: Model, classes: list[ClassInfo]) -> None:
    """Rename a class (its pictures follow) or delete it with its pictures."""
    if not classes:
        return
    with st.expander("Rename or delete a class", icon=":material/edit:"):
        names = [c.name for c in classes]
        chosen = st.selectbox("Class", names, key="classes.chosen")
        rename_column, delete_column = st.columns(2)
        with rename_column:
            new_name = st.text_input("New name", key="classes.new_name")
            if st.button("Rename", key="classes.rename", disabled=not new_name.strip()):
                try:
                    api.rename_class(token, model.id, chosen, new_name.strip())
                except ApiError as err:
                    show_problem(err)
                notice(f"Renamed '{chosen}' to '{new_name.strip()}'.")
                st.rerun()
        with delete_column:
            count = next(c.total_images for c in classes if c.name == chosen)
            sure = st.checkbox(f"Yes, delete '{chosen}' and its {count:,} pictures", key="classes.sure")
            if st.button("Delete class", key="classes.delete", disabled=not sure, type="primary"):
                try:
                    update_job_id = api.delete_class(token, model.id, chosen)
                except ApiError as err:
                    show_problem(err)
                follow_update(model.id, update_job_id)
                notice(f"Deleted the class '{chosen}'.")
                st.rerun()
