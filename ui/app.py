"""Classifly's web UI (placeholder until the UI issue lands): shows where the API is and whether it answers."""

from __future__ import annotations

import os

import httpx
import streamlit as st

API_URL = os.environ.get("CLASSIFLY_API_URL", "http://127.0.0.1:8000")

st.set_page_config(page_title="Classifly", page_icon="🌼")
st.title("Classifly")
st.write("Turn folders of labelled pictures into image classifiers.")
try:
    healthy = httpx.get(f"{API_URL}/v1/health", timeout=3).status_code == 200
except httpx.HTTPError:
    healthy = False
if healthy:
    st.success(f"The API is running at {API_URL}.")
else:
    st.error(f"The API at {API_URL} does not answer. Start the platform with 'make run'.")
st.markdown(f"Until the full web app arrives, use the API: [interactive docs]({API_URL}/docs).")
