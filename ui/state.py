"""Every key the web UI keeps in `st.session_state`, named once.

streamlit-authenticator owns "authentication_status", "username", "name", "roles" and "logout"; the two the UI
reads are named at the end.
"""

from __future__ import annotations

# Ours
API_TOKEN = "classifly.api_token"  # the user's API session token (from the service route after sign-in)
USER = "classifly.user"  # ui.api_types.User of the signed-in user
COOKIE_PENDING = "classifly.cookie_pending"  # signed in with a password: the next run writes the signed cookie
SIGN_OUT = "classifly.sign_out"  # asked for by a "Sign out" button (or an ended session); the frame carries it out
SIGNED_OUT = "classifly.signed_out"  # "You are signed out." stays on the sign-in screen until the next sign-in
NOTICE = "classifly.notice"  # a one-off success message shown after a rerun (e.g. "Deleted 3 pictures.")
MODEL_TAB = "classifly.model_tab"  # the open tab of the model page
MODEL_ID = "classifly.model_id"  # the model the model page shows (also in the URL as ?model=)
IMPORT_ROUND = "classifly.import_round"  # per model: how many zips were sent from this browser session
IMPORT_JOB = "classifly.import_job"  # job id of the import being followed, per model: f"{IMPORT_JOB}.{model_id}"
NEW_TOKEN = "classifly.new_token"  # a just-created API token, shown once
CLEANUP_PLAN = "classifly.cleanup_plan"  # the clean-up proposal the user is looking at
REVIEW_POSITION = "classifly.review_position"  # per model and class: f"{REVIEW_POSITION}.{model_id}.{label}"
REVIEW_ERROR = "classifly.review_error"  # a refusal met by a review key press, shown on the next run
GALLERY_PAGE = "classifly.gallery_page"  # per model and class
UPLOAD_RESULT = "classifly.upload_result"  # the outcome of the last picture upload, per model
THUMBNAILS = "classifly.thumbnails"  # thumbnail bytes by content hash, for this browser session
TRAIN_ERROR = "classifly.train_error"  # a refusal met by the Cancel button (a callback), shown on the next run
REVIEW_SOURCE = "classifly.review_source"  # per model: review the possible label mistakes or one class
EXPORT_FILE = "classifly.export_file"  # per model: (version, format, bytes) of the export ready to download
UPDATE_JOB = "classifly.update_job"  # per model: id of the model update (job) being followed
UPDATE_DONE = "classifly.update_done"  # per model: the finished update (Job) whose outcome is shown until hidden
CLASSIFIED = "classifly.classified"  # per model: the last classification (list of ui.sections.classify.Shown)
CLASSIFY_ROUND = "classifly.classify_round"  # per model: how many times pictures were classified (empties uploads)
FEEDBACK_GIVEN = "classifly.feedback_given"  # per task id: the Task as the API answered the feedback
FEEDBACK_ERROR = "classifly.feedback_error"  # a refusal met by a Right / Wrong button (a callback), shown next run
HISTORY_PAGE = "classifly.history_page"  # per model: the page of the history table

# streamlit-authenticator's
AUTH_STATUS = "authentication_status"
AUTH_USERNAME = "username"


def keyed(base: str, *parts: object) -> str:
    """A per-model (or per-class) key: keyed(IMPORT_JOB, model_id)."""
    return ".".join([base, *(str(part) for part in parts)])
