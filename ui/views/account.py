"""Your account: storage used against the quota, a balanced clean-up when space runs short, signing out."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import api_client as api
from ui import state
from ui.api_client import ApiError
from ui.components import api_token, current_user, human_bytes, notice, show_notice, show_problem

MiB = 2**20

token = api_token()
user = current_user()
st.title("Account and storage")
show_notice()

try:
    usage = api.storage(token)
except ApiError as err:
    show_problem(err)

st.write(f"Signed in as **{user.username}**" + (" (administrator)." if user.is_admin else "."))
share = usage.used_bytes / usage.quota_bytes if usage.quota_bytes else 0.0
st.progress(
    min(1.0, share), text=f"{human_bytes(usage.used_bytes)} of {human_bytes(usage.quota_bytes)} used ({share:.0%})"
)
if usage.over_quota:
    st.error("You are over your storage quota: new pictures are refused until you free some space.")
    st.caption("Delete models or pictures you no longer need, or let the clean-up below choose for you.")
if usage.models:
    per_model = pd.DataFrame(
        [{"model": m.name, "MB": round(m.bytes / MiB, 2), "pictures": m.images} for m in usage.models]
    )
    st.bar_chart(per_model, x="model", y="MB", horizontal=True, height=max(120, 40 * len(usage.models)))

st.subheader("Free space, keeping every class balanced", anchor=False)
st.write(
    "The clean-up deletes the same share of every class of every model (never a whole class), so your datasets "
    "keep their balance. You see the proposal first; nothing is deleted until you confirm."
)
megabytes = st.number_input(
    "How much to free (MB)? Leave 0 to get back to 90 % of your quota.", min_value=0, value=0, step=10
)
free_bytes = int(megabytes * MiB) or None
if st.button("Propose a clean-up", key="cleanup.propose"):
    try:
        st.session_state[state.CLEANUP_PLAN] = (free_bytes, api.propose_cleanup(token, free_bytes))
    except ApiError as err:
        show_problem(err)

proposal = st.session_state.get(state.CLEANUP_PLAN)
if proposal is not None:
    asked, plan = proposal
    if plan.images == 0:
        st.info("Nothing needs to go: you are within the limit you asked for.")
    else:
        st.write(
            f"Delete **{plan.images:,} pictures** ({plan.share_removed:.0%} of each class), "
            f"freeing {human_bytes(plan.freed_bytes)}."
        )
        if not plan.sufficient:
            st.warning("Even this does not free enough: no class is ever emptied. Delete a model you do not need.")
        names = {m.model_id: m.name for m in usage.models}
        rows = [
            {"model": names.get(row["model_id"], row["model_id"]), "class": row["class"],
             "pictures now": row["before"], "to delete": row["removed"]}
            for row in plan.per_class
        ]  # fmt: skip
        st.dataframe(pd.DataFrame(rows), hide_index=True)
        if st.button("Delete these pictures", key="cleanup.apply", type="primary"):
            try:
                done = api.apply_cleanup(token, asked)
            except ApiError as err:
                show_problem(err)
            del st.session_state[state.CLEANUP_PLAN]
            notice(f"Deleted {done.images:,} pictures, freeing {human_bytes(done.freed_bytes)}.")
            st.rerun()

st.divider()
st.button(
    "Sign out",
    key="account.sign_out",
    icon=":material/logout:",
    on_click=lambda: st.session_state.update({state.SIGN_OUT: True}),
)
