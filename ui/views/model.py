"""One model, in tabs: its data (import, chart, gallery, review), training, evaluation, classifying pictures, the
history of answers with feedback and figures, its versions and quick updates, copy-paste API examples, and its
settings. A quick update (after pictures are added or a class deleted) is followed above the tabs."""

from __future__ import annotations

import streamlit as st

from ui import api_client as api
from ui import state
from ui.api_client import ApiError
from ui.components import api_token, human_duration, show_notice, show_problem, status_words, target_words
from ui.sections import classes as class_section
from ui.sections import dataset, gallery, review
from ui.sections.api_examples import render_api_examples
from ui.sections.classify import render_classify
from ui.sections.evaluation import render_evaluation
from ui.sections.history import render_history
from ui.sections.model_settings import render_settings
from ui.sections.model_update import render_update_status
from ui.sections.training import render_training
from ui.sections.versions import render_versions

TABS = ["Data", "Train", "Evaluate", "Classify", "History", "Versions", "API", "Settings"]

token = api_token()
model_id = st.query_params.get("model") or st.session_state.get(state.MODEL_ID)
if not model_id:
    st.info("Choose a model first.")
    st.page_link("views/models.py", label="Your models", icon=":material/category:")
    st.stop()
st.session_state[state.MODEL_ID] = model_id
st.query_params["model"] = model_id

try:
    model = api.get_model(token, model_id)
except ApiError as err:
    st.page_link("views/models.py", label="Back to your models", icon=":material/arrow_back:")
    show_problem(err)

st.page_link("views/models.py", label="Your models", icon=":material/arrow_back:")
st.title(model.name, anchor=False)
words, meaning = status_words(model)
answering = f" · version {model.active_version} answers" if model.active_version is not None else ""
st.caption(
    f"**{words}**. {meaning} {model.num_classes} classes · {model.num_images:,} pictures{answering} · "
    f"goal: {target_words(model.target_accuracy)} · training at most {human_duration(model.time_budget_s)}."
)
show_notice()
render_update_status(token, model)

# Stateful tabs, so only the open tab does its work (not bound to the URL: st.switch_page cannot clear a
# bound query parameter, and "Delete model" switches pages).
data, train, evaluate, classify, history, versions, api_tab, settings = st.tabs(
    TABS, key=state.MODEL_TAB, on_change="rerun"
)

if data.open:
    with data:
        dataset.render_overview(token, model)
        dataset.render_import(token, model)
        try:
            classes = api.list_classes(token, model.id)
        except ApiError as err:
            show_problem(err)
        st.subheader("Pictures", anchor=False)
        if st.toggle("Review one by one", key=state.keyed("review.on", model.id), help="Keys: K, D, M, B"):
            review.render_review(token, model, classes)
        else:
            gallery.render_gallery(token, model, classes)
        class_section.render_add_pictures(token, model, classes)
        class_section.render_manage_classes(token, model, classes)
        gallery.render_rejects(token, model)

if train.open:
    with train:
        render_training(token, model)

if evaluate.open:
    with evaluate:
        render_evaluation(token, model)

if classify.open:
    with classify:
        render_classify(token, model)

if history.open:
    with history:
        render_history(token, model)

if versions.open:
    with versions:
        render_versions(token, model)

if api_tab.open:
    with api_tab:
        try:
            names = [c.name for c in api.list_classes(token, model.id)]
        except ApiError as err:
            show_problem(err)
        render_api_examples(model, names[0] if names else None)

if settings.open:
    with settings:
        render_settings(token, model)
