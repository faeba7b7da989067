"""Copy-paste examples for this model: curl and Python, with its real id and this server's API address."""

from __future__ import annotations

import streamlit as st

from ui import api_client as api
from ui.api_types import Model

CURL = """API={api}
TOKEN=cfy_...     # an API token: create one on the "API tokens" page
MODEL={model}

# The model and its dataset statistics (counts, warnings)
curl -s $API/v1/models/$MODEL -H "Authorization: Bearer $TOKEN"
curl -s $API/v1/models/$MODEL/dataset -H "Authorization: Bearer $TOKEN"

# Import a zip of class folders (a background job; follow the "url" it returns)
curl -s -X POST $API/v1/models/$MODEL/imports -H "Authorization: Bearer $TOKEN" -F file=@pictures.zip

# Add pictures to a class (created when new)
curl -s -X POST $API/v1/models/$MODEL/images -H "Authorization: Bearer $TOKEN" \\
     -F label={label} -F files=@picture1.jpg -F files=@picture2.jpg

# List the pictures of a class
curl -s "$API/v1/models/$MODEL/images?label={label}&limit=20" -H "Authorization: Bearer $TOKEN"

# Train: a background run that keeps the best candidate within the goal and time (follow the "url" it returns)
curl -s -X POST $API/v1/models/$MODEL/train -H "Authorization: Bearer $TOKEN"

# The versions training made, each with its results on the test pictures
curl -s $API/v1/models/$MODEL/versions -H "Authorization: Bearer $TOKEN"
"""

PYTHON = """import time

import requests

API = "{api}"
MODEL = "{model}"
HEADERS = {{"Authorization": "Bearer cfy_..."}}  # an API token from the "API tokens" page

# Import a zip of class folders, and wait for its report
with open("pictures.zip", "rb") as zip_file:
    job = requests.post(f"{{API}}/v1/models/{{MODEL}}/imports", headers=HEADERS, files={{"file": zip_file}}).json()
while job["status"] in ("queued", "running"):
    time.sleep(1)
    job = requests.get(API + job["url"], headers=HEADERS).json()
print(job["result"]["summary"] if job["status"] == "succeeded" else job["error"])

# Dataset statistics and warnings in plain words
stats = requests.get(f"{{API}}/v1/models/{{MODEL}}/dataset", headers=HEADERS).json()
print(stats["total_images"], "pictures;", *stats["warnings"])
"""


def render_api_examples(model: Model, first_class: str | None) -> None:
    base = api.api_url()
    label = first_class or "daisy"
    st.write(
        f"Everything on these pages works through the REST API at `{base}`. "
        f"This model's id is `{model.id}`. Errors come back as a short `title` and a `detail` that says what to do."
    )
    st.page_link("views/tokens.py", label="Create an API token", icon=":material/key:")
    curl_tab, python_tab = st.tabs(["curl", "Python"])
    curl_tab.code(CURL.format(api=base, model=model.id, label=label), language="bash")
    python_tab.code(PYTHON.format(api=base, model=model.id), language="python")
    st.markdown(f"All routes, with their fields: [interactive API docs]({base}/docs).")
    st.caption("Classifying pictures through the API arrives in a coming version.")
