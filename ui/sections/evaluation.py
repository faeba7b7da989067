"""The Evaluate tab: how a version does on the test pictures (accuracy, per class, the confusion matrix with the
pictures behind each mistake, whether its confidence can be trusted) and the pictures whose label looks wrong."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from ui import api_client as api
from ui import state
from ui.api_client import ApiError
from ui.api_types import Evaluation, Model, Version
from ui.components import percent, show_problem
from ui.sections.gallery import render_picture_grid
from ui.sections.review import open_mistakes_review
from ui.sections.versions import choose_version

MAX_LABELLED_CELLS = 20  # above this many classes the counts no longer fit in the cells
WELL_CALIBRATED = 0.05
AXES_HEIGHT = 80  # room under the cells for the class names and the axis title


def render_evaluation(token: str, model: Model) -> None:
    try:
        versions = api.list_versions(token, model.id)
    except ApiError as err:
        show_problem(err)
    if not versions:
        st.info(
            "Nothing to evaluate yet. Train the model on the **Train** tab: each training ends with a test on "
            "pictures the model never learned from."
        )
        return
    version = choose_version(versions, key=state.keyed("evaluate.version", model.id))
    evaluation = version.metrics
    if evaluation.accuracy is None:
        st.info(f"Version {version.version} has no test results.")
        return
    render_headline(evaluation)
    render_per_class(evaluation)
    render_confusion(token, model, version)
    render_calibration(evaluation)
    render_label_mistakes(token, model, version)


def render_headline(evaluation: Evaluation) -> None:
    columns = st.columns(3)
    columns[0].metric("Right on the test pictures", percent(evaluation.accuracy))
    columns[1].metric("Test pictures", f"{evaluation.test_images:,}")
    if evaluation.calibration is not None:
        columns[2].metric(
            "Confidence off by",
            f"{evaluation.calibration.expected_error * 100:.1f} points",
            help="How far, on average, its confidence is from how often it is really right.",
        )
    held_back = (
        f" While training it got {percent(evaluation.val_accuracy)} of the held-back pictures right."
        if evaluation.val_accuracy is not None
        else ""
    )
    st.caption(
        "The test pictures are kept apart: the model never learned from them, so this is how it should do on new "
        f"pictures like yours.{held_back}"
    )


def render_per_class(evaluation: Evaluation) -> None:
    if not evaluation.per_class:
        return
    st.subheader("Per class", anchor=False)
    table = pd.DataFrame(
        [
            {
                "class": score.name,
                "found": score.recall,
                "right when it says so": score.precision,
                "F1": score.f1,
                "test pictures": score.support,
            }
            for score in evaluation.per_class
        ]
    )
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "found": st.column_config.NumberColumn(
                format="percent", help="Recall: of the test pictures of this class, the share it recognised"
            ),
            "right when it says so": st.column_config.NumberColumn(
                format="percent", help="Precision: of the pictures it put in this class, the share that belong there"
            ),
            "F1": st.column_config.NumberColumn(format="%.2f", help="F1: found and right in one number (1 is best)"),
        },
    )
    if len(evaluation.per_class) > 1:
        weakest = min(evaluation.per_class, key=lambda score: score.f1)
        if weakest.f1 < max(score.f1 for score in evaluation.per_class):
            st.caption(f"Weakest: '{weakest.name}'. More, and more varied, pictures of it usually help most.")


def render_confusion(token: str, model: Model, version: Version) -> None:
    """The confusion matrix as a heatmap, then the pictures behind one of its mistake cells."""
    evaluation = version.metrics
    names, matrix = evaluation.class_names, evaluation.confusion_matrix
    if not names or len(matrix) != len(names):
        return
    st.subheader("What it mistakes for what", anchor=False)
    st.caption(
        "Each row is what the test pictures really are, each column what the model said. The diagonal is right; "
        "every other cell is a mistake."
    )
    cells = pd.DataFrame(
        [
            {"really": names[row], "said": names[column], "pictures": count}
            for row, counts in enumerate(matrix)
            for column, count in enumerate(counts)
        ]
    )
    base = alt.Chart(cells).encode(
        x=alt.X("said:N", sort=names, title="the model said", axis=alt.Axis(labelAngle=0 if len(names) <= 6 else -45)),
        y=alt.Y("really:N", sort=names, title="it really is"),
    )
    chart = base.mark_rect().encode(
        color=alt.Color("pictures:Q", scale=alt.Scale(scheme="blues"), legend=None),
        tooltip=["really", "said", "pictures"],
    )
    if len(names) <= MAX_LABELLED_CELLS:
        high = max(1, int(cells["pictures"].max()))
        chart += base.mark_text(fontSize=14).encode(
            text="pictures:Q",
            color=alt.condition(alt.datum.pictures > high / 2, alt.value("white"), alt.value("black")),
        )
    # The element's height too: without it Streamlit squeezes a layered chart to its default height.
    cells_height = min(640, 60 + 40 * len(names))
    st.altair_chart(chart.properties(height=cells_height), height=cells_height + AXES_HEIGHT)
    render_mistake_cell(token, model, version)


def render_mistake_cell(token: str, model: Model, version: Version) -> None:
    """Choose a mistake (true class, predicted class), most frequent first, and see its pictures."""
    evaluation = version.metrics
    names, matrix = evaluation.class_names, evaluation.confusion_matrix
    cells = [
        (names[row], names[column], count)
        for row, counts in enumerate(matrix)
        for column, count in enumerate(counts)
        if row != column and count
    ]
    if not cells:
        st.success("It got every test picture right.")
        return
    counts = {(really, said): count for really, said, count in sorted(cells, key=lambda cell: -cell[2])}
    really, said = st.selectbox(
        "Open the pictures of a mistake",
        list(counts),
        format_func=lambda pair: (
            f"'{pair[0]}' taken for '{pair[1]}' ({counts[pair]} picture" + ("s)" if counts[pair] != 1 else ")")
        ),
        key=state.keyed("evaluate.cell", model.id, version.version),
    )
    wrong = [m for m in evaluation.misclassified if m.true == really and m.predicted == said]
    if not wrong:
        st.caption("The pictures of this cell were not listed (only the first 500 mistakes are kept).")
        return
    render_picture_grid(token, model.id, {m.image_id: f"{m.confidence:.0%} sure it is '{m.predicted}'" for m in wrong})


def render_calibration(evaluation: Evaluation) -> None:
    calibration = evaluation.calibration
    bins = [b for b in calibration.bins if b.count] if calibration else []
    if not bins:
        return
    st.subheader("Can you trust its confidence?", anchor=False)
    st.caption(
        "Each dot is a group of test pictures by how sure the model was. On the dashed line it is right exactly as "
        "often as it says; below the line it is more sure of itself than it should be."
    )
    dots = pd.DataFrame([{"sure": b.confidence, "right": b.accuracy, "pictures": b.count} for b in bins])
    scale = alt.Scale(domain=[0, 1])
    honest = (
        alt.Chart(pd.DataFrame({"sure": [0.0, 1.0], "right": [0.0, 1.0]}))
        .mark_line(strokeDash=[4, 4], color="gray")
        .encode(x=alt.X("sure:Q", scale=scale), y=alt.Y("right:Q", scale=scale))
    )
    measured = (
        alt.Chart(dots)
        .mark_line(point=True)
        .encode(
            x=alt.X("sure:Q", title="how sure it was", axis=alt.Axis(format="%"), scale=scale),
            y=alt.Y("right:Q", title="how often it was right", axis=alt.Axis(format="%"), scale=scale),
            tooltip=[
                alt.Tooltip("sure:Q", format=".0%"),
                alt.Tooltip("right:Q", format=".0%"),
                "pictures",
            ],
        )
    )
    st.altair_chart((honest + measured).properties(height=320))
    advice = (
        "you can take its percentages at face value"
        if calibration.expected_error <= WELL_CALIBRATED
        else "treat its percentages as a rough guide"
    )
    error = calibration.expected_error
    st.caption(f"On average its confidence is {error:.1%} away from how often it is right: {advice}.")


def render_label_mistakes(token: str, model: Model, version: Version) -> None:
    mistakes = version.metrics.label_mistakes
    if mistakes is None:
        return
    st.subheader("Possible label mistakes", anchor=False)
    if not mistakes:
        st.caption("No picture looks filed under the wrong class.")
        return
    st.caption(
        "The model is very sure these pictures belong to another class than the one they are filed under. A wrong "
        "label teaches it the wrong thing: check them, then train again."
    )
    render_picture_grid(
        token,
        model.id,
        {m.image_id: f"filed as '{m.given}', looks like '{m.suggested}' ({m.confidence:.0%})" for m in mistakes},
    )
    if version.active:
        st.button(
            "Review them one by one",
            key="evaluate.review",
            type="primary",
            icon=":material/fact_check:",
            on_click=open_mistakes_review,
            args=(model.id,),
        )
    else:
        st.caption("Review one by one works on the list of the version answering now.")
