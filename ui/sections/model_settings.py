"""A model's settings: name, description, goal, time budget, automatic retraining, sample picture; deleting it."""

from __future__ import annotations

import streamlit as st

from ui import api_client as api
from ui.api_client import ApiError
from ui.api_types import Model
from ui.components import notice, show_problem

SAMPLE_TYPES = ["png", "jpg", "jpeg", "gif", "webp", "bmp", "tif", "tiff"]


def render_settings(token: str, model: Model) -> None:
    with st.form(f"settings.{model.id}"):
        name = st.text_input("Name", value=model.name, max_chars=200)
        description = st.text_area("Description", value=model.description, max_chars=2000)
        best = st.checkbox("As good as possible (no target)", value=model.target_accuracy is None)
        target = st.number_input(
            "Target accuracy (%)",
            min_value=1.0,
            max_value=100.0,
            value=round((model.target_accuracy or 0.9) * 100, 1),
            step=0.5,
            help="Ignored when 'As good as possible' is ticked.",
        )
        minutes = st.number_input(
            "Longest training (minutes)", min_value=1, max_value=10080, value=max(1, model.time_budget_s // 60)
        )
        auto_retrain = st.toggle(
            "Train again by itself when a quick update is not good enough",
            value=model.auto_retrain,
            help="Adding a class usually takes seconds, without training. When the new version cannot tell the "
            "classes apart well enough, a full training can start on its own; the quick version answers meanwhile.",
        )
        sample = st.file_uploader("New sample picture (optional)", type=SAMPLE_TYPES)
        if st.form_submit_button("Save", type="primary"):
            if not name.strip():
                st.error("Give the model a name.")
                st.stop()
            try:
                api.update_model(
                    token,
                    model.id,
                    name=name.strip(),
                    description=description.strip(),
                    target_accuracy=None if best else target / 100,
                    time_budget_s=max(10, int(minutes * 60)),
                    auto_retrain=auto_retrain,
                )
                if sample is not None:
                    api.set_sample_image(token, model.id, sample.name, sample.getvalue())
            except ApiError as err:
                show_problem(err)
            notice("Saved.")
            st.rerun()

    st.subheader("Delete this model", anchor=False)
    st.caption("Deletes the model with all its pictures. This cannot be undone.")
    sure = st.checkbox(f"Yes, delete '{model.name}' and its {model.num_images:,} pictures", key="settings.sure")
    if st.button("Delete model", disabled=not sure, key="settings.delete", icon=":material/delete_forever:"):
        try:
            api.delete_model(token, model.id)
        except ApiError as err:
            show_problem(err)
        notice(f"Deleted the model '{model.name}'.")
        st.switch_page("views/models.py")
