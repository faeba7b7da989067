"""For administrators: the cluster in plain words (machines, what is busy and free, people's own machines, work
waiting and running, the answering replicas) and a link to the Ray dashboard; nothing for others."""

from __future__ import annotations

import os

import streamlit as st

from ui import api_client
from ui.api_client import ApiError
from ui.api_types import ClusterNode, ClusterView
from ui.components import api_token, current_user, show_problem

DEFAULT_DASHBOARD_URL = "http://127.0.0.1:8265"
KIND_WORDS = {"head": "Head (runs the platform itself)", "worker": "Shared machine"}

token = api_token()
user = current_user()
st.title("Cluster")
if user is None or not user.is_admin:
    st.error("This page is for administrators.")
    st.caption("Ask the person who runs this server if you need to see the cluster.")
    st.stop()


def dashboard_link(url: str) -> None:
    st.link_button("Open the Ray dashboard", url, icon=":material/open_in_new:")
    st.caption(
        "It shows every process, log and replica. It asks for Ray's token: on the head machine, run "
        f"`cat ~/.ray/auth_token`. It listens on {url}; from another machine, use an SSH tunnel."
    )


def megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB" if size >= 100_000 else f"{size / 1e3:,.0f} kB"


def amount(value: float) -> str:
    return f"{value:g}"


def share(resources: dict[str, float], name: str, free: dict[str, float]) -> str:
    total = resources.get(name, 0.0)
    if not total:
        return "-"
    return f"{amount(total - free.get(name, total))} of {amount(total)} busy"


def kind_words(node: ClusterNode) -> str:
    if node.kind == "runner":
        return f"{node.owner}'s own machine (only their training)"
    return KIND_WORDS.get(node.kind, node.kind)


def node_row(node: ClusterNode) -> dict[str, str]:
    runner_cpus = sum(v for k, v in node.total.items() if k.startswith("runner_"))
    return {
        "Machine": node.address or node.id[:12],
        "What it is": kind_words(node),
        "Up": "yes" if node.alive else "no (lost)",
        "CPUs": share(node.total, "CPU", node.available) if not runner_cpus else f"{amount(runner_cpus)} lent",
        "GPUs": share(node.total, "GPU", node.available),
        "For training": share(node.total, "classifly_train", node.available),
        "For classifying": share(node.total, "classifly_serve", node.available),
    }


try:
    view: ClusterView = api_client.admin_cluster(token)
except ApiError as err:
    show_problem(err, stop=False)
    dashboard_link(os.environ.get("CLASSIFLY_DASHBOARD_URL", DEFAULT_DASHBOARD_URL))
    st.stop()

dashboard_link(os.environ.get("CLASSIFLY_DASHBOARD_URL") or view.dashboard_url or DEFAULT_DASHBOARD_URL)
if view.ray != "connected":
    st.warning(f"The API cannot see Ray right now ({view.ray}); machines and replicas are not shown.")

alive = [node for node in view.nodes if node.alive]
if view.nodes:
    total, free = view.resources.total, view.resources.free
    st.subheader("Machines")
    st.write(
        f"{len(alive)} machine{'s' if len(alive) != 1 else ''} up"
        + (f", {len(view.nodes) - len(alive)} lost" if len(alive) != len(view.nodes) else "")
        + f". CPUs: {share(total, 'CPU', free)}. For training: {share(total, 'classifly_train', free)}; "
        f"for classifying: {share(total, 'classifly_serve', free)}."
    )
    if total.get("GPU"):
        st.write(f"GPUs: {share(total, 'GPU', free)}.")
    st.dataframe([node_row(node) for node in view.nodes], hide_index=True, width="stretch")

st.subheader("People's own machines")
if view.runners:
    for runner in view.runners:
        machines = f"{runner.nodes} machine{'s' if runner.nodes != 1 else ''}"
        st.write(
            f"**{runner.username}** lends {machines} with {amount(runner.cpus)} CPUs, used only for their training."
        )
else:
    st.caption("Nobody has lent a machine. Anyone can, with `classifly runner join` (see docs/CLUSTER.md).")

st.subheader("Work")
if view.runs or view.jobs:
    rows = [
        {"What": "Training", "Whose": run.get("owner") or "-", "State": run.get("status"),
         "Progress": run.get("message") or ""}
        for run in view.runs
    ] + [
        {"What": str(job.get("kind", "job")).replace("_", " ").capitalize(), "Whose": job.get("owner") or "-",
         "State": job.get("status"), "Progress": job.get("message") or ""}
        for job in view.jobs
    ]  # fmt: skip
    running = sum(1 for row in rows if row["State"] == "running")
    st.write(f"{running} running, {len(rows) - running} waiting.")
    st.dataframe(rows, hide_index=True, width="stretch")
else:
    st.caption("Nothing is training or importing right now.")

if view.serve:
    st.subheader("Answering classifications")
    st.dataframe(
        [
            {
                "Part": d.get("deployment"),
                "State": str(d.get("status", "")).lower(),
                "Replicas": ", ".join(f"{n} {s.lower()}" for s, n in d.get("replicas", {}).items()) or "none",
            }
            for d in view.serve
        ],  # fmt: skip
        hide_index=True,
        width="stretch",
    )

st.subheader("Storage per person")
if view.storage:
    st.dataframe(
        [
            {
                "Who": u.username,
                "Models": u.models,
                "Pictures": u.pictures,
                "Stored": megabytes(u.used_bytes),
                "Of their quota": f"{u.used_bytes / u.quota_bytes:.0%}" if u.quota_bytes else "-",
            }
            for u in view.storage
        ],  # fmt: skip
        hide_index=True,
        width="stretch",
    )
else:
    st.caption("No accounts yet.")
