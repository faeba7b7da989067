"""The History tab: how the model does in use (an alert when it is clearly worse than on the test pictures,
classified pictures per hour and day, how often it is right according to your checks, next to its test accuracy)
and every classified picture, filtered and a page at a time, with Right / Wrong."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from ui import api_client as api
from ui import state
from ui.api_client import ApiError
from ui.api_types import Model, ModelStats, Task, Version, VersionField
from ui.components import percent, show_problem
from ui.sections.feedback import feedback_words, given_feedback, render_feedback, show_feedback_error

PAGE_SIZE = 20
PERIODS = {7: "the last 7 days", 30: "the last 30 days", 90: "the last 90 days", 365: "the last year"}
FEEDBACK_FILTERS = {
    None: "All",
    "none": "Not checked yet",
    "given": "Checked",
    "confirmed": "Right",
    "corrected": "Wrong",
}
COLUMN_WIDTHS = [1.3, 1.8, 0.8, 0.8, 1.8, 2.2]
HEADINGS = ["When", "Answer", "Sure", "Version", "Your check", ""]


def render_history(token: str, model: Model) -> None:
    days = st.selectbox("Period", list(PERIODS), index=1, format_func=PERIODS.get, key="history.days")
    try:
        stats = api.model_stats(token, model.id, days=days)
        versions = api.list_versions(token, model.id)
    except ApiError as err:
        show_problem(err)
    for version in stats.versions:
        if version.alert:
            st.error(version.alert, icon=":material/warning:")
    if stats.tasks:
        render_figures(stats, model)
    else:
        st.caption(f"Nothing classified in {PERIODS[days]}.")
    render_tasks(token, model, versions)


def render_figures(stats: ModelStats, model: Model) -> None:
    answering = next((v for v in stats.versions if v.version == model.active_version), None)
    columns = st.columns(4)
    columns[0].metric("Pictures classified", f"{stats.tasks:,}")
    columns[1].metric(
        "Not sure", percent(stats.uncertain / stats.tasks), help="Share of answers the model was not sure about"
    )
    typical = stats.latency.p50_ms
    columns[2].metric("Typical answer time", "–" if typical is None else f"{typical:,.0f} ms")
    if answering is not None:
        columns[3].metric(
            f"Right in use (version {answering.version})",
            percent(answering.field.accuracy),
            help=f"Of the {answering.field.feedback} answers you checked. On the test pictures: "
            f"{percent(answering.evaluated_accuracy)}.",
        )
    render_traffic(stats)
    render_field_accuracy(stats.versions, model.active_version)


def render_traffic(stats: ModelStats) -> None:
    st.markdown("**Pictures classified**")
    per_hour = st.toggle("Per hour (the last two days)", key="history.per_hour")
    counts = stats.per_hour if per_hour else stats.per_day
    if not counts:
        st.caption("None in this period.")
        return
    table = pd.DataFrame({"time": [c.start for c in counts], "pictures": [c.count for c in counts]})
    st.bar_chart(table, x="time", y="pictures", x_label="", y_label="pictures", height=220)


def render_field_accuracy(versions: list[VersionField], active: int | None) -> None:
    """Per day, how often a version was right among the answers you checked, next to its test accuracy."""
    st.markdown("**Right in use, by your checks**")
    checked = [v for v in versions if v.field.feedback]
    if not checked:
        st.caption(
            "Mark answers Right or Wrong (below, or on the Classify tab) to see how often the model is right in use."
        )
        return
    by_number = {v.version: v for v in checked}
    default = next((i for i, v in enumerate(checked) if v.version == active), 0)
    number = st.selectbox(
        "Version",
        list(by_number),
        index=default,
        format_func=lambda n: f"Version {n}" + (" (answering now)" if n == active else ""),
        key="history.field_version",
    )
    version = by_number[number]
    st.altair_chart(field_chart(version), width="stretch")
    st.caption(
        f"Version {version.version}: right on {percent(version.field.accuracy)} of the {version.field.feedback} "
        f"answers you checked (likely between {percent(version.field.low)} and {percent(version.field.high)}); "
        f"{percent(version.evaluated_accuracy)} on the test pictures. The band shows how uncertain each day's "
        "figure is: few checks, wide band."
    )
    rows = [
        {"answered": c.label, "pictures": c.tasks, "checked": c.field.feedback, "right": c.field.accuracy}
        for c in version.per_class
    ]
    if rows:
        with st.expander("Per class", icon=":material/category:"):
            st.dataframe(
                pd.DataFrame(rows),
                hide_index=True,
                column_config={"right": st.column_config.NumberColumn("right in use", format="percent")},
            )


def field_chart(version: VersionField) -> alt.LayerChart:
    days = pd.DataFrame(
        [
            {
                "day": d.start,
                "right": d.field.accuracy,
                "low": d.field.low,
                "high": d.field.high,
                "checked": d.field.feedback,
            }
            for d in version.per_day
        ]
    )
    scale = alt.Scale(domain=[0, 1])
    base = alt.Chart(days).encode(x=alt.X("day:T", title=""))
    band = base.mark_area(opacity=0.2).encode(
        y=alt.Y("low:Q", scale=scale, title="right", axis=alt.Axis(format="%")), y2="high:Q"
    )
    line = base.mark_line(point=True).encode(
        y=alt.Y("right:Q", scale=scale),
        tooltip=[
            alt.Tooltip("day:T"),
            alt.Tooltip("right:Q", format=".0%"),
            alt.Tooltip("checked:Q", title="answers checked"),
        ],
    )
    layers = [band, line]
    if version.evaluated_accuracy is not None:
        evaluated = pd.DataFrame({"right": [version.evaluated_accuracy], "what": ["on the test pictures"]})
        layers.append(
            alt.Chart(evaluated)
            .mark_rule(strokeDash=[6, 4], color="gray")
            .encode(y=alt.Y("right:Q", scale=scale), tooltip=["what", alt.Tooltip("right:Q", format=".0%")])
        )
    return alt.layer(*layers).properties(height=240)


def render_tasks(token: str, model: Model, versions: list[Version]) -> None:
    """Every classified picture, newest first, with filters, pages, and Right / Wrong per answer."""
    st.subheader("Classified pictures", anchor=False)
    show_feedback_error()
    page_key = state.keyed(state.HISTORY_PAGE, model.id)
    version_column, feedback_column = st.columns(2)
    version = version_column.selectbox(
        "Version",
        [None, *(v.version for v in versions)],
        format_func=lambda n: "All versions" if n is None else f"Version {n}",
        key="history.version",
        on_change=_first_page,
        args=(page_key,),
    )
    feedback = feedback_column.selectbox(
        "Your check",
        list(FEEDBACK_FILTERS),
        format_func=FEEDBACK_FILTERS.get,
        key="history.feedback",
        on_change=_first_page,
        args=(page_key,),
    )
    page = st.session_state.get(page_key, 0)
    try:
        tasks = api.list_tasks(
            token, model.id, version=version, feedback=feedback, limit=PAGE_SIZE, offset=page * PAGE_SIZE
        )
    except ApiError as err:
        show_problem(err)
    if not tasks.data:
        if version is None and feedback is None and page == 0:
            st.info("Nothing classified yet. Pictures classified on the Classify tab or through the API appear here.")
        else:
            st.info("No classified picture matches.")
        return
    classes = {v.version: v.classes for v in versions}
    render_rows(token, tasks.data, classes)
    render_pages(page_key, page, tasks.count)
    st.caption("The API keeps each answer, not the picture itself, so pictures are not shown here.")


def render_rows(token: str, tasks: list[Task], classes: dict[int, list[str]]) -> None:
    """One row per answer with its Right / Wrong buttons (a table cannot hold buttons)."""
    for column, heading in zip(st.columns(COLUMN_WIDTHS), HEADINGS, strict=True):
        if heading:
            column.markdown(f"**{heading}**")
    for task in tasks:
        row = st.columns(COLUMN_WIDTHS, vertical_alignment="center")
        row[0].write(task.created_at.strftime("%Y-%m-%d %H:%M"))
        row[1].markdown(f"{task.label} · :orange[not sure]" if task.uncertain else task.label)
        row[2].write(f"{task.confidence:.0%}")
        row[3].write(f"{task.version}")
        row[4].markdown(feedback_words(given_feedback(task.id, task.feedback)))
        with row[5]:
            known = classes.get(task.version) or [s.label for s in task.top]
            render_feedback(token, task.id, task.label, known, key=f"history.{task.id}")


def render_pages(page_key: str, page: int, count: int) -> None:
    last = max(0, (count - 1) // PAGE_SIZE)
    back_column, where_column, next_column = st.columns([1, 3, 1], vertical_alignment="center")
    back_column.button(
        "Newer",
        key="history.newer",
        icon=":material/chevron_left:",
        disabled=page == 0,
        on_click=_go_to,
        args=(page_key, page - 1),
    )
    first = page * PAGE_SIZE + 1
    where_column.caption(f"Pictures {first:,}–{min(count, first + PAGE_SIZE - 1):,} of {count:,}")
    next_column.button(
        "Older",
        key="history.older",
        icon=":material/chevron_right:",
        disabled=page >= last,
        on_click=_go_to,
        args=(page_key, page + 1),
    )


def _go_to(page_key: str, page: int) -> None:
    st.session_state[page_key] = max(0, page)


def _first_page(page_key: str) -> None:
    st.session_state[page_key] = 0
