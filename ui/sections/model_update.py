"""Model updates: on a trained model, added pictures and deleted classes reach the answering model within seconds,
without training (the API's "expansion" jobs). Following one live, what it did, the recent ones, and the
"Update the model now" button for changes that do not start one by themselves (moved or deleted pictures)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import api_client as api
from ui import state
from ui.api_client import ApiError
from ui.api_types import Job, Model, UpdateResult
from ui.components import percent, show_problem

POLL_SECONDS = 1.0
RECENT = 10
OUTCOME_WORDS = {
    "queued": "waiting",
    "running": "updating",
    "succeeded": "done",
    "failed": "failed",
    "interrupted": "interrupted",
    "cancelled": "cancelled",
}


def edit_hint(model: Model) -> str:
    """After pictures were moved or deleted (which start no update by themselves): how the model learns of it."""
    if model.active_version is None:
        return ""
    return " The answering version learns of it with **Update the model now** on the Versions tab."


def follow_update(model_id: str, job_id: str | None) -> None:
    """Have the model page follow this update (nothing happens without one: an untrained model has none)."""
    if job_id:
        st.session_state[state.keyed(state.UPDATE_JOB, model_id)] = job_id
        st.session_state.pop(state.keyed(state.UPDATE_DONE, model_id), None)


def render_update_status(token: str, model: Model) -> None:
    """The update being followed, live; then its outcome until hidden. Nothing (and no API call) otherwise."""
    job_id = st.session_state.get(state.keyed(state.UPDATE_JOB, model.id))
    if job_id:
        follow_job(token, model.id, job_id)
        return
    done = st.session_state.get(state.keyed(state.UPDATE_DONE, model.id))
    if done is not None:
        render_outcome(done, model.id)


@st.fragment(run_every=POLL_SECONDS)
def follow_job(token: str, model_id: str, job_id: str) -> None:
    """Poll the update once a second; refresh the whole page (new version, counts) when it is over."""
    try:
        job = api.get_job(token, job_id)
    except ApiError as err:
        st.session_state.pop(state.keyed(state.UPDATE_JOB, model_id), None)
        show_problem(err)
    if not job.finished:
        st.progress(min(1.0, max(0.0, job.progress.fraction)), text=progress_words(job))
        return
    st.session_state.pop(state.keyed(state.UPDATE_JOB, model_id), None)
    st.session_state[state.keyed(state.UPDATE_DONE, model_id)] = job
    st.rerun(scope="app")


def progress_words(job: Job) -> str:
    if job.status == "queued":
        return "Updating the model … waiting a moment, so that changes made together make one new version."
    return f"Updating the model … {job.message}".strip()


def render_outcome(job: Job, model_id: str) -> None:
    """What the update did (or why it could not), the advice to train when it was not good enough, and Hide."""
    result = UpdateResult.of(job)
    with st.container(border=True):
        if job.status == "succeeded" and result is not None:
            if result.changed:
                st.success(result_words(result), icon=":material/published_with_changes:")
            else:
                st.info(result.summary or "Nothing changed: the model already knew these pictures.")
            if result.left_out:
                st.caption(
                    f"Not in this version yet: {quoted(result.left_out)}. A class needs at least 2 pictures for "
                    "training and 1 for testing."
                )
            if result.retrain_recommended:
                render_train_advice(model_id)
        elif job.status == "failed":
            error = job.error or {}
            st.error("The model could not be updated.")
            st.caption(f"{error.get('detail') or job.message} The version that answered before still answers.")
        else:
            st.warning(f"The update did not finish ({job.status}). The version that answered before still answers.")
        st.button("Hide", key="update.hide", on_click=_hide, args=(model_id,))


def render_train_advice(model_id: str) -> None:
    st.warning(
        "**A full training is recommended.** The quick update cannot tell the classes apart well enough; a full "
        "training learns what tells them apart. Until then, this version answers.",
        icon=":material/model_training:",
    )
    st.button(
        "Go to training",
        key="update.train",
        type="primary",
        icon=":material/model_training:",
        on_click=open_train_tab,
        args=(model_id,),
    )


def result_words(result: UpdateResult) -> str:
    """'Version 3 answers now (added checker): 92.0% of the test pictures right, ready in 2.1 s.'"""
    if result.version is None:
        return result.summary or "The model is up to date."
    changes = []
    if result.added:
        changes.append(f"added {', '.join(result.added)}")
    if result.removed:
        changes.append(f"removed {', '.join(result.removed)}")
    words = f"Version {result.version} answers now ({'; '.join(changes) or 'learned from the new pictures'})"
    if result.accuracy is not None:
        words += f": {percent(result.accuracy)} of the test pictures right"
    if result.seconds is not None:
        words += f", ready in {result.seconds:.1f} s"
    return words + "."


def quoted(names: list[str]) -> str:
    return ", ".join(f"'{name}'" for name in names)


def open_train_tab(model_id: str) -> None:
    """A callback (it sets the tab before the tabs are drawn)."""
    st.session_state[state.MODEL_TAB] = "Train"
    _hide(model_id)


def _hide(model_id: str) -> None:
    st.session_state.pop(state.keyed(state.UPDATE_DONE, model_id), None)


def render_updates(token: str, model: Model) -> None:
    """On the Versions tab: "Update the model now" and the recent updates."""
    st.subheader("Quick updates", anchor=False)
    st.caption(
        "When you add pictures or delete a class, Classifly makes a new version within seconds, without "
        "training. After moving or deleting pictures, update it yourself."
    )
    following = bool(st.session_state.get(state.keyed(state.UPDATE_JOB, model.id)))
    if st.button(
        "Update the model now",
        key="versions.update",
        icon=":material/published_with_changes:",
        disabled=following or model.active_version is None,
        help="Bring the answering version up to date with the pictures as they are now.",
    ):
        try:
            job = api.update_model_now(token, model.id)
        except ApiError as err:
            show_problem(err, stop=False)
        else:
            follow_update(model.id, job.id)
            st.rerun()
    try:
        updates = api.list_updates(token, model.id)
    except ApiError as err:
        show_problem(err)
    if not updates:
        st.caption("No quick updates yet.")
        return
    st.dataframe(pd.DataFrame([update_row(job) for job in updates[:RECENT]]), hide_index=True)


def update_row(job: Job) -> dict[str, object]:
    result = UpdateResult.of(job)
    if job.status == "succeeded" and result is not None:
        about = result_words(result) if result.changed else (result.summary or "Nothing changed.")
        if result.retrain_recommended:
            about += " A full training is recommended."
    elif job.error:
        about = str(job.error.get("detail") or job.message)
    else:
        about = job.message
    return {
        "when": job.created_at.strftime("%Y-%m-%d %H:%M"),
        "outcome": OUTCOME_WORDS.get(job.status, job.status),
        "version": result.version if result else None,
        "what happened": about,
    }
