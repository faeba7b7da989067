"""A training run's candidate models: the leaderboard in plain words and each one's accuracy per epoch."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from ui.api_types import RunDetail, Trial

TRIAL_WORDS = {"running": "training", "finished": "done", "stopped": "stopped early", "error": "failed"}


def render_candidates(run: RunDetail) -> None:
    """The leaderboard (best first, as the API orders it) and each candidate's accuracy per epoch."""
    st.markdown("**Candidate models**")
    names = candidate_names(run.trials)
    table = pd.DataFrame(
        [
            {
                "candidate": names[trial.trial_id],
                "status": TRIAL_WORDS.get(trial.status, trial.status),
                "accuracy": trial.best_val_accuracy,
                "epochs": trial.epochs,
                "seconds": trial.cost_s,
                "why it stopped": trial.stop_reason or "",
            }
            for trial in run.trials
        ]
    )
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "accuracy": st.column_config.NumberColumn(
                "accuracy", format="percent", help="Share of held-back pictures (not learned from) it got right"
            ),
            "epochs": st.column_config.NumberColumn("epochs", help="Passes over the training pictures"),
            "seconds": st.column_config.NumberColumn("time", format="%.0f s"),
        },
    )
    render_curves(run.trials, names)


def candidate_names(trials: list[Trial]) -> dict[str, str]:
    """Each trial's title, numbered when two candidates share one (else their curves would merge)."""
    names: dict[str, str] = {}
    seen: dict[str, int] = {}
    for trial in sorted(trials, key=lambda t: t.trial_id):
        seen[trial.title] = seen.get(trial.title, 0) + 1
        names[trial.trial_id] = trial.title if seen[trial.title] == 1 else f"{trial.title} ({seen[trial.title]})"
    return names


def render_curves(trials: list[Trial], names: dict[str, str]) -> None:
    points = [
        {
            "candidate": names[trial.trial_id],
            "epoch": point.epoch if point.epoch is not None else number,
            "accuracy": point.val_accuracy,
        }
        for trial in trials
        for number, point in enumerate(trial.history, start=1)
        if point.val_accuracy is not None
    ]
    if not points:
        st.caption("The accuracy curves appear after the first pass over the pictures.")
        return
    chart = (
        alt.Chart(pd.DataFrame(points))
        .mark_line(point=True)
        .encode(
            x=alt.X("epoch:Q", title="pass over the pictures (epoch)", axis=alt.Axis(tickMinStep=1)),
            y=alt.Y("accuracy:Q", title="right on held-back pictures", axis=alt.Axis(format="%")),
            color=alt.Color("candidate:N", legend=alt.Legend(orient="bottom", columns=1, labelLimit=600, title=None)),
            tooltip=["candidate", "epoch", alt.Tooltip("accuracy:Q", format=".1%")],
        )
    )
    st.altair_chart(chart)
