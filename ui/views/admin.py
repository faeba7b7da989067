"""For administrators: where to watch the cluster today (the Ray dashboard); cluster views come later."""

from __future__ import annotations

import os

import streamlit as st

from ui.components import api_token, coming, current_user

DEFAULT_DASHBOARD_URL = "http://127.0.0.1:8265"

api_token()
user = current_user()
st.title("Cluster")
if user is None or not user.is_admin:
    st.error("This page is for administrators.")
    st.caption("Ask the person who runs this server if you need to see the cluster.")
    st.stop()

dashboard = os.environ.get("CLASSIFLY_DASHBOARD_URL", DEFAULT_DASHBOARD_URL)
st.write("The Ray dashboard shows the machines, their CPUs and memory, and every running task and replica.")
st.link_button("Open the Ray dashboard", dashboard, icon=":material/open_in_new:")
st.caption(
    "It asks for Ray's token: on the head machine, run `cat ~/.ray/auth_token`. "
    f"It listens on {dashboard}; from another machine, use an SSH tunnel."
)
coming(
    "Cluster views",
    "nodes and their resources, running jobs, trials and replicas, and storage per user, here in Classifly. "
    "They come with the cluster work.",
    plural=True,
)
