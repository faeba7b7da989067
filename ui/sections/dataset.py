"""The dataset at a glance (counts, class chart, warnings, how training will prepare pictures) and zip imports."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import api_client as api
from ui import state
from ui.api_client import ApiError
from ui.api_types import DatasetStats, Job, Model, job_id_of
from ui.components import human_bytes, notice, show_problem
from ui.sections.model_update import follow_update

LAYOUTS = (
    (
        "Class folders (split 80/20 for you)",
        "flowers.zip\n├── daisy/\n│   ├── 1.jpg\n│   └── 2.jpg …\n└── roses/\n    └── 1.jpg …",
    ),
    (
        "Your own training and test split",
        "flowers.zip\n├── train/\n│   ├── daisy/ …\n│   └── roses/ …\n└── test/\n    ├── daisy/ …\n    └── roses/ …",
    ),
)
RESIZE_WORDS = {
    "stretch": "stretched to a square",
    "letterbox": "fitted into a square with plain borders (not stretched)",
    "center_crop": "cropped to a square around the centre",
}
POLL_SECONDS = 1.0


def render_overview(token: str, model: Model) -> None:
    """Counts, warnings in plain words, the class chart and the preprocessing policy."""
    try:
        stats = api.dataset_stats(token, model.id)
    except ApiError as err:
        show_problem(err)
    columns = st.columns(5)
    columns[0].metric("Pictures", f"{stats.total_images:,}")
    columns[1].metric("Classes", len(stats.classes))
    columns[2].metric("For training", f"{stats.train_images:,}")
    columns[3].metric("For testing", f"{stats.test_images:,}")
    columns[4].metric("Rejected files", f"{stats.rejected_images:,}")
    for warning in stats.warnings:
        st.warning(warning, icon=":material/warning:")
    if stats.classes:
        render_class_chart(stats)
    if stats.preprocessing:
        policy = stats.preprocessing
        colour = "in grey" if policy.color == "gray" else "in colour"
        how = RESIZE_WORDS.get(policy.resize, policy.resize)
        st.caption(
            f"Training will look at each picture at {policy.image_size}×{policy.image_size} pixels, {colour}, "
            f"{how}. Stored: {human_bytes(stats.storage_bytes)}; duplicates skipped so far: "
            f"{stats.duplicates_skipped:,}."
        )


def render_class_chart(stats: DatasetStats) -> None:
    st.markdown("**Pictures per class**")
    table = pd.DataFrame(
        {
            "class": [c["name"] for c in stats.classes],
            "for training": [c["train"] for c in stats.classes],
            "for testing": [c["test"] for c in stats.classes],
        }
    ).set_index("class")
    # Horizontal bars: class names stay readable however many there are.
    st.bar_chart(
        table,
        y=["for training", "for testing"],
        x_label="",  # with horizontal=True, x is the vertical (class) axis
        y_label="pictures",
        horizontal=True,
        stack=True,
        height=min(640, 140 + 44 * len(table)),
    )


def render_import(token: str, model: Model) -> None:
    """Upload a zip; follow the import with a progress bar; show the last import's report."""
    job_key = state.keyed(state.IMPORT_JOB, model.id)
    following = st.session_state.get(job_key)
    with st.expander("Import a zip of labelled pictures", expanded=model.num_images == 0 and not following):
        st.write("Put each class in its own folder, then zip them. Either of these layouts works:")
        for column, (title, tree) in zip(st.columns(2), LAYOUTS, strict=True):
            column.caption(title)
            column.code(tree, language=None)
        st.caption(
            "Files that are not pictures, or that are broken, are refused with a reason; the rest still imports. "
            "For zips of several gigabytes, the API is faster (see the API tab)."
        )
        # A new uploader key after each import empties it, so the same zip is not sent twice by mistake.
        round_key = state.keyed(state.IMPORT_ROUND, model.id)
        upload = st.file_uploader(
            "Zip file", type=["zip"], key=state.keyed("import.file", model.id, st.session_state.get(round_key, 0))
        )
        if st.button("Import", type="primary", disabled=upload is None or bool(following), key="import.start"):
            try:
                job = api.start_import(token, model.id, upload.name, upload)
            except ApiError as err:
                show_problem(err)
            st.session_state[job_key] = job.id
            st.session_state[round_key] = st.session_state.get(round_key, 0) + 1
            st.rerun()
    if following:
        follow_import(token, model.id, following)
    else:
        render_last_report(token, model)


@st.fragment(run_every=POLL_SECONDS)
def follow_import(token: str, model_id: str, job_id: str) -> None:
    """Poll the import job once a second, showing its progress; refresh the whole page when it is over."""
    try:
        job = api.get_job(token, job_id)
    except ApiError as err:
        st.session_state.pop(state.keyed(state.IMPORT_JOB, model_id), None)
        show_problem(err)
    if not job.finished:
        done = f"{job.progress.done:,} of {job.progress.total:,} files" if job.progress.total else "starting"
        st.progress(job.progress.fraction, text=f"Importing … {done}. {job.message}".strip())
        return
    st.session_state.pop(state.keyed(state.IMPORT_JOB, model_id), None)
    if job.status == "succeeded":
        notice((job.result or {}).get("summary", "The import is done."))
        follow_update(model_id, job_id_of((job.result or {}).get("model_update")))  # a trained model's update
    st.rerun(scope="app")


def render_last_report(token: str, model: Model) -> None:
    try:
        imports = api.list_imports(token, model.id)
    except ApiError as err:
        show_problem(err)
    if imports:
        render_report(imports[0])


def render_report(job: Job) -> None:
    """An import's report: what was added per class, duplicates, refused files and why, warnings."""
    when = job.created_at.strftime("%Y-%m-%d %H:%M")
    if job.status == "failed":
        error = job.error or {}
        st.error(f"The import of {when} failed: {error.get('title', 'it stopped')}.")
        st.caption(f"{error.get('detail', job.message)} Your pictures are as they were before it.")
        return
    if job.status != "succeeded":
        st.warning(f"The import of {when} did not finish ({job.status}). Your pictures are as they were before it.")
        return
    report = job.result or {}
    with st.expander(f"Last import ({when}): {report.get('summary', '')}", expanded=False, icon=":material/inventory:"):
        if report.get("classes"):
            table = pd.DataFrame(report["classes"]).rename(
                columns={"name": "class", "train": "for training", "test": "for testing", "total": "total"}
            )
            st.dataframe(table, hide_index=True)
        for warning in report.get("warnings", []):
            st.warning(warning)
        if report.get("rejects"):
            st.markdown(f"**Refused files ({report.get('rejected', len(report['rejects']))})**")
            st.dataframe(pd.DataFrame(report["rejects"]), hide_index=True, column_config={"name": "file"})
        if report.get("duplicates"):
            st.caption(f"Skipped {report['duplicates']} pictures already in this model (same bytes).")
        if report.get("ignored_files"):
            st.caption(f"Ignored {report['ignored_files']} system files (such as __MACOSX/ and .DS_Store).")
