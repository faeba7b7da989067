"""The Train tab: start a training (goal, time, advanced choices), follow it live (progress, time left, the
candidates and their accuracy curves, cancel), what became of the last one (summary, or why it stopped and a
Resume button), and the list of past trainings."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import api_client as api
from ui import state
from ui.api_client import ApiError
from ui.api_types import Model, Run, TrainOptions
from ui.components import human_duration, percent, rough_duration, short_duration, show_problem, target_words
from ui.sections.candidates import render_candidates

POLL_SECONDS = 2.0
KINDS = {
    "frozen_head": "Pretrained network, only a new last layer learned (fastest)",
    "finetune": "Pretrained network with its top layers retrained (slower, often more accurate)",
    "scratch_cnn": "Small network learned from scratch (for simple pictures such as digits or icons)",
}
# The backbones the API has today; it refuses a name it does not know, with the list it accepts.
BACKBONES = {
    "efficientnet_lite0": "EfficientNet-Lite0 (smaller, faster)",
    "efficientnet_lite2": "EfficientNet-Lite2 (larger, a little more accurate)",
}
RUN_WORDS = {
    "queued": "waiting to start",
    "running": "training",
    "succeeded": "finished",
    "failed": "failed",
    "cancelled": "cancelled",
    "interrupted": "interrupted",
}


def render_training(token: str, model: Model) -> None:
    """The running training if there is one, else the Train button and the outcome of the last training."""
    try:
        runs = api.list_runs(token, model.id)
    except ApiError as err:
        show_problem(err)
    active = next((run for run in runs if run.active), None)
    if active:
        follow_run(token, active.id)
    else:
        render_start(token, model)
        if runs:
            render_outcome(token, runs[0])
    render_past_runs(runs)


def render_start(token: str, model: Model) -> None:
    st.markdown(
        f"**Goal:** {target_words(model.target_accuracy)} · **time:** at most {human_duration(model.time_budget_s)}"
    )
    st.caption(
        "Classifly tries several kinds of models on your pictures, keeps the best one and checks it on the test "
        "pictures. Change the goal and the time on the Settings tab."
    )
    button_slot = st.container()  # the button above the advanced options, which it needs the values of
    options = advanced_options(model)
    with button_slot:
        if model.status == "needs_data":
            st.info("Add at least two classes with pictures on the **Data** tab first.")
        if st.button(
            "Train",
            type="primary",
            icon=":material/model_training:",
            key="train.start",
            disabled=model.status == "needs_data",
        ):
            try:
                api.start_training(token, model.id, options)
            except ApiError as err:
                show_problem(err)
            st.rerun()


def advanced_options(model: Model) -> TrainOptions:
    """Choices for this training only; whatever is left empty, the platform decides."""
    with st.expander("Advanced", icon=":material/tune:"):
        st.caption("Leave these empty and Classifly decides. They apply to this training only.")
        left, right = st.columns(2)
        target = left.number_input(
            "Goal for this training (% of test pictures right)",
            min_value=1.0,
            max_value=100.0,
            value=None,
            step=0.5,
            placeholder=target_words(model.target_accuracy),
            key="train.target",
        )
        minutes = right.number_input(
            "Longest this training may take (minutes)",
            min_value=1,
            max_value=10080,
            value=None,
            placeholder=human_duration(model.time_budget_s),
            key="train.minutes",
        )
        kinds = st.multiselect(
            "Kinds of model to try",
            list(KINDS),
            format_func=KINDS.get,
            placeholder="All that suit the pictures",
            key="train.kinds",
        )
        backbones = st.multiselect(
            "Pretrained networks to start from",
            list(BACKBONES),
            format_func=BACKBONES.get,
            placeholder="Any",
            key="train.backbones",
        )
        epochs_column, batch_column, rate_column = st.columns(3)
        max_epochs = epochs_column.number_input(
            "Most passes over the pictures (epochs)", min_value=1, max_value=500, value=None, key="train.epochs"
        )
        batch_size = batch_column.number_input(
            "Pictures per learning step (batch size)", min_value=1, max_value=4096, value=None, key="train.batch"
        )
        learning_rate = rate_column.number_input(
            "Learning rate",
            min_value=0.00001,
            max_value=1.0,
            value=None,
            step=0.0001,
            format="%.5f",
            key="train.rate",
            help="How big each learning step is. Too big and it never settles; too small and it learns slowly.",
        )
        augmentation = st.checkbox(
            "Also learn from altered copies of the pictures (flipped, shifted, …)",
            value=True,
            key="train.augmentation",
            help="Untick to learn from the pictures exactly as they are, e.g. when left and right matter.",
        )
    return TrainOptions(
        target_accuracy=target / 100 if target is not None else None,
        time_budget_s=int(minutes * 60) if minutes is not None else None,
        kinds=kinds or None,
        backbones=backbones or None,
        max_epochs=max_epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        augmentation=None if augmentation else False,
    )


@st.fragment(run_every=POLL_SECONDS)
def follow_run(token: str, run_id: str) -> None:
    """Poll the training every two seconds; refresh the whole page when it is over."""
    problem = st.session_state.pop(state.TRAIN_ERROR, None)
    if problem is not None:
        st.error(problem.title)
        st.caption(problem.detail)
    try:
        run = api.get_run(token, run_id)
    except ApiError as err:
        show_problem(err)
    if not run.active:
        st.rerun(scope="app")
    st.progress(min(1.0, max(0.0, run.progress.fraction)), text=progress_words(run))
    if run.cancel_requested:
        st.caption("Stopping … The model keeps answering with the version it had.")
    else:
        st.button(
            "Cancel training",
            key="train.cancel",
            icon=":material/stop_circle:",
            on_click=_cancel,
            args=(token, run.id),
            help="Stops the search. The model keeps answering with the version it had.",
        )
    if run.trials:
        render_candidates(run)
    else:
        st.caption("The candidate models appear here as soon as the first one starts learning.")


def _cancel(token: str, run_id: str) -> None:
    # A callback, so the fragment's next run already shows "Stopping …".
    try:
        api.cancel_run(token, run_id)
    except ApiError as err:
        st.session_state[state.TRAIN_ERROR] = err.problem


def progress_words(run: Run) -> str:
    """'Trying candidate models (2 of 6 done) · best so far 91.2% · about 4 minutes left'."""
    progress = run.progress
    if run.status == "queued" or progress.stage == "queued":
        return "Waiting for the cluster to start the training …"
    parts = [progress.message or "Training …"]
    if progress.best_accuracy is not None:
        parts.append(f"best so far {percent(progress.best_accuracy)}")
    if progress.seconds_left is not None:
        parts.append(f"{rough_duration(progress.seconds_left)} left")
    return " · ".join(parts)


STEP_WORDS = {
    "preparing": "reading the pictures",
    "searching": "trying candidate models",
    "testing": "checking on the test pictures",
    "quick_updates": "preparing quick updates",
    "label_check": "looking for label mistakes",
    "publishing": "publishing",
}


def time_words(step_seconds: dict[str, float]) -> str:
    """'Where the time went: reading the pictures 12 s · trying candidate models 3 min 40 s · ...' (steps
    under half a second left out)."""
    parts = [
        f"{STEP_WORDS.get(step, step.replace('_', ' '))} {short_duration(seconds)}"
        for step, seconds in step_seconds.items()
        if seconds >= 0.5
    ]
    return "Where the time went: " + " · ".join(parts) + "."


def render_outcome(token: str, run: Run) -> None:
    """How the last training ended: its summary, or why it stopped and a Resume button; then its candidates."""
    when = run.created_at.strftime("%Y-%m-%d %H:%M")
    if run.status == "succeeded":
        result = run.result
        st.success(result.summary if result and result.summary else f"The training of {when} finished.")
        target = run.config.target_accuracy
        if result and target is not None and not result.reached_target:
            st.info(f"It did not reach the goal of {target:.0%}. More pictures per class, or more time, usually help.")
        if result and result.step_seconds:
            st.caption(time_words(result.step_seconds))
        st.caption("It answers requests from now on. The Evaluate tab shows how it does per class.")
    elif run.status in ("failed", "interrupted"):
        render_stopped(token, run, when)
    elif run.status == "cancelled":
        st.info(f"The training of {when} was cancelled. The model answers with the version it had.")
    try:
        detail = api.get_run(token, run.id)
    except ApiError as err:
        show_problem(err)
    if detail.trials:
        with st.expander(f"The {len(detail.trials)} candidate models of this training", icon=":material/leaderboard:"):
            render_candidates(detail)


def render_stopped(token: str, run: Run, when: str) -> None:
    """A failed or interrupted training: why, in a sentence, and the Resume button."""
    if run.status == "failed":
        st.error(run.error.title if run.error else "The training stopped on a problem.")
        detail = run.error.detail if run.error and run.error.detail else run.progress.message
    else:
        st.warning(f"The training of {when} was interrupted: the platform stopped before it finished.")
        detail = f"It was at: {run.progress.message.rstrip('.')}." if run.progress.message else ""
    if detail:
        st.caption(detail)
    st.caption("Resume it to go on with the same pictures; the model keeps answering with the version it had.")
    if st.button("Resume", key="train.resume", icon=":material/play_arrow:"):
        try:
            api.resume_run(token, run.id)
        except ApiError as err:
            show_problem(err)
        st.rerun()


def render_past_runs(runs: list[Run]) -> None:
    if not runs:
        return
    rows = []
    for run in runs:
        took = (run.finished_at - run.started_at).total_seconds() if run.finished_at and run.started_at else None
        if run.result and run.result.summary:
            about = run.result.summary
        elif run.error:
            about = run.error.detail or run.error.title
        else:
            about = run.progress.message
        rows.append(
            {
                "started": run.created_at.strftime("%Y-%m-%d %H:%M"),
                "outcome": RUN_WORDS.get(run.status, run.status),
                "pictures": run.num_images,
                "took": took,
                "what happened": about,
            }
        )
    with st.expander(f"All trainings ({len(runs)})", icon=":material/history:"):
        st.dataframe(
            pd.DataFrame(rows),
            hide_index=True,
            column_config={"took": st.column_config.NumberColumn("took", format="duration")},
        )
