"""Your models: each with its status and counts, and a form to create a new one."""

from __future__ import annotations

import streamlit as st

from ui import api_client as api
from ui.api_client import ApiError
from ui.components import (
    api_token,
    human_duration,
    open_model,
    sample_image,
    show_notice,
    show_problem,
    status_words,
    target_words,
)

TARGETS = {"As good as possible": None, "80 %": 0.8, "85 %": 0.85, "90 %": 0.9, "95 %": 0.95, "99 %": 0.99}
BUDGETS = {"5 minutes": 300, "10 minutes": 600, "30 minutes": 1800, "1 hour": 3600, "3 hours": 10800}
SAMPLE_TYPES = ["png", "jpg", "jpeg", "gif", "webp", "bmp", "tif", "tiff"]
STATUS_COLORS = {"needs_data": "orange", "ready_to_train": "blue", "ready": "green"}

token = api_token()
st.title("Models")
show_notice()

try:
    models = api.list_models(token)
except ApiError as err:
    show_problem(err)

first_tab = "Your models" if models else "New model"
yours, create = st.tabs(["Your models", "New model"], key="models.tab", default=first_tab)

with yours:
    if not models:
        st.info("You have no models yet. Create one on the **New model** tab, then add labelled pictures to it.")
    for row_start in range(0, len(models), 3):
        for column, model in zip(st.columns(3), models[row_start : row_start + 3], strict=False):
            with column.container(border=True):
                picture = sample_image(token, model.id, model.updated_at) if model.has_sample_image else None
                if picture:
                    st.image(picture, width=160)
                st.subheader(model.name, anchor=False)
                words, meaning = status_words(model)
                st.badge(words, color=STATUS_COLORS.get(model.status, "gray"), help=meaning)
                st.write(f"{model.num_classes} classes · {model.num_images:,} pictures")
                st.caption(
                    f"Goal: {target_words(model.target_accuracy)}, "
                    f"training at most {human_duration(model.time_budget_s)}."
                )
                if model.description:
                    st.caption(model.description)
                if st.button("Open", key=f"models.open.{model.id}", type="primary", icon=":material/arrow_forward:"):
                    open_model(model.id)

with create, st.form("models.create"):
    st.subheader("New model", anchor=False)
    name = st.text_input("Name", placeholder="e.g. Flowers", max_chars=200)
    description = st.text_area("Description (optional)", max_chars=2000, placeholder="What should it recognise?")
    sample = st.file_uploader("Sample picture (optional): shown in this list", type=SAMPLE_TYPES)
    target_label = st.select_slider(
        "How often must it be right?",
        options=list(TARGETS),
        value="As good as possible",
        help="Training stops early once this share of the test pictures is classified correctly.",
    )
    budget_label = st.select_slider(
        "How long may one training take at most?", options=list(BUDGETS), value="10 minutes"
    )
    with st.expander("Advanced options"):
        exact = st.checkbox("Use these exact values instead")
        exact_target = st.number_input("Target accuracy (%)", min_value=1.0, max_value=100.0, value=90.0, step=0.5)
        exact_minutes = st.number_input("Time budget (minutes)", min_value=1, max_value=10080, value=10)
    if st.form_submit_button("Create model", type="primary"):
        if not name.strip():
            st.error("Give the model a name.")
            st.stop()
        target = exact_target / 100 if exact else TARGETS[target_label]
        budget = max(10, int(exact_minutes * 60)) if exact else BUDGETS[budget_label]
        try:
            model = api.create_model(token, name.strip(), description.strip(), target, budget)
        except ApiError as err:
            show_problem(err)
        if sample is not None:
            try:
                api.set_sample_image(token, model.id, sample.name, sample.getvalue())
            except ApiError as err:
                st.warning(f"The model was created, but its sample picture was refused: {err.problem.detail}")
                st.stop()
        open_model(model.id)
