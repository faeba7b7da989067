"""Classifly's web UI (Streamlit): a client of the REST API, started by `classifly up` (see ui/app.py)."""
