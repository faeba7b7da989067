"""The pictures of one class as thumbnails, with move and delete; refused files with their reasons."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import streamlit as st

from ui import api_client as api
from ui import state
from ui.api_client import ApiError
from ui.api_types import ClassInfo, Image, Model
from ui.components import notice, show_problem
from ui.sections.model_update import edit_hint

PAGE_SIZE = 24
COLUMNS = 6
THUMBNAIL_CACHE_LIMIT = 1000


def thumbnails(token: str, model_id: str, images: list[Image]) -> dict[int, bytes]:
    """Thumbnails by image id, fetched in parallel and kept for this browser session (by content hash)."""
    cache: dict[str, bytes] = st.session_state.setdefault(state.THUMBNAILS, {})
    missing = [image for image in images if image.sha256 not in cache]
    if missing:
        if len(cache) > THUMBNAIL_CACHE_LIMIT:
            cache.clear()
        with ThreadPoolExecutor(max_workers=6) as pool:
            fetched = pool.map(lambda image: api.thumbnail(token, model_id, image.id), missing)
            for image, data in zip(missing, fetched, strict=True):
                cache[image.sha256] = data
    return {image.id: cache[image.sha256] for image in images}


def thumbnails_by_id(token: str, model_id: str, image_ids: list[int]) -> dict[int, bytes | None]:
    """Thumbnails of pictures known only by id (from an evaluation), kept for this browser session under
    "model/id" (a picture's bytes never change under its id); None for a picture deleted since."""
    cache: dict[str, bytes | None] = st.session_state.setdefault(state.THUMBNAILS, {})

    def fetch(image_id: int) -> bytes | None:
        try:
            return api.thumbnail(token, model_id, image_id)
        except ApiError as err:
            if err.problem.status == 404:
                return None
            raise

    missing = [image_id for image_id in image_ids if f"{model_id}/{image_id}" not in cache]
    if missing:
        if len(cache) > THUMBNAIL_CACHE_LIMIT:
            cache.clear()
        with ThreadPoolExecutor(max_workers=6) as pool:
            for image_id, data in zip(missing, pool.map(fetch, missing), strict=True):
                cache[f"{model_id}/{image_id}"] = data
    return {image_id: cache[f"{model_id}/{image_id}"] for image_id in image_ids}


def render_picture_grid(token: str, model_id: str, captions: dict[int, str], limit: int = PAGE_SIZE) -> None:
    """Thumbnails with a caption each (the first `limit`), for pictures known by id."""
    shown = list(captions)[:limit]
    try:
        pictures = thumbnails_by_id(token, model_id, shown)
    except ApiError as err:
        show_problem(err)
    for row_start in range(0, len(shown), COLUMNS):
        for column, image_id in zip(st.columns(COLUMNS), shown[row_start : row_start + COLUMNS], strict=False):
            if pictures[image_id] is None:
                column.caption(f"{captions[image_id]} (deleted since)")
                continue
            column.image(pictures[image_id], caption=captions[image_id], width="stretch")
    if len(captions) > len(shown):
        st.caption(f"Showing {len(shown)} of {len(captions):,}.")


def choose_class(classes: list[ClassInfo], key: str, label: str = "Class") -> str | None:
    if not classes:
        return None
    names = [c.name for c in classes]
    counts = {c.name: c.total_images for c in classes}
    return st.selectbox(label, names, key=key, format_func=lambda name: f"{name} ({counts[name]:,} pictures)")


def render_gallery(token: str, model: Model, classes: list[ClassInfo]) -> None:
    """A page of one class's pictures; tick some to move them to another class or delete them."""
    label = choose_class(classes, key=state.keyed("gallery.class", model.id))
    if label is None:
        st.info("No pictures yet. Import a zip above, or add pictures to a class below.")
        return
    page_key = state.keyed(state.GALLERY_PAGE, model.id, label)
    page = st.session_state.get(page_key, 0)
    try:
        listed = api.list_images(token, model.id, label=label, limit=PAGE_SIZE, offset=page * PAGE_SIZE)
        pictures = thumbnails(token, model.id, listed.data)
    except ApiError as err:
        show_problem(err)
    if not listed.data and page > 0:
        st.session_state[page_key] = 0
        st.rerun()
    selected: list[int] = []
    for row_start in range(0, len(listed.data), COLUMNS):
        for column, image in zip(st.columns(COLUMNS), listed.data[row_start : row_start + COLUMNS], strict=False):
            column.image(pictures[image.id], width="stretch")
            name = _short(image.original_name)
            full_name = image.original_name if name != image.original_name.rsplit("/", 1)[-1] else None
            if column.checkbox(name, key=f"gallery.pick.{image.id}", help=full_name):
                selected.append(image.id)
    pages = max(1, -(-listed.count // PAGE_SIZE))
    _pager(page_key, page, pages, listed.count)
    _selection_actions(token, model, classes, label, selected)


def _short(name: str, limit: int = 22) -> str:
    base = name.rsplit("/", 1)[-1]
    return base if len(base) <= limit else base[: limit - 1] + "…"


def _pager(page_key: str, page: int, pages: int, count: int) -> None:
    if pages <= 1:
        st.caption(f"{count:,} pictures")
        return
    previous, where, following = st.columns([1, 2, 1])
    if previous.button("Previous page", disabled=page == 0, key="gallery.previous", icon=":material/chevron_left:"):
        st.session_state[page_key] = page - 1
        st.rerun()
    where.caption(f"Page {page + 1} of {pages} · {count:,} pictures")
    if following.button("Next page", disabled=page + 1 >= pages, key="gallery.next", icon=":material/chevron_right:"):
        st.session_state[page_key] = page + 1
        st.rerun()


def _selection_actions(token: str, model: Model, classes: list[ClassInfo], label: str, selected: list[int]) -> None:
    if not selected:
        st.caption("Tick pictures to move them to another class or delete them.")
        return
    others = [c.name for c in classes if c.name != label]
    target_column, move_column, delete_column = st.columns([2, 1, 1], vertical_alignment="bottom")
    target = target_column.selectbox(
        f"Move the {len(selected)} ticked pictures to", others, key="gallery.move_to", disabled=not others
    )
    if move_column.button("Move", disabled=not others, key="gallery.move", icon=":material/drive_file_move:"):
        try:
            for image_id in selected:
                api.move_image(token, model.id, image_id, target)
        except ApiError as err:
            show_problem(err)
        _forget_ticks(selected)
        notice(f"Moved {len(selected)} pictures to '{target}'." + edit_hint(model))
        st.rerun()
    if delete_column.button("Delete", key="gallery.delete", icon=":material/delete:"):
        try:
            api.delete_images(token, model.id, selected)
        except ApiError as err:
            show_problem(err)
        _forget_ticks(selected)
        notice(f"Deleted {len(selected)} pictures." + edit_hint(model))
        st.rerun()


def _forget_ticks(image_ids: list[int]) -> None:
    for image_id in image_ids:
        st.session_state.pop(f"gallery.pick.{image_id}", None)


def render_rejects(token: str, model: Model) -> None:
    """Files that were refused at upload or import, with the reason each was refused."""
    try:
        rejected = api.list_images(token, model.id, status="rejected", limit=200)
    except ApiError as err:
        show_problem(err)
    if not rejected.count:
        return
    with st.expander(f"Refused files ({rejected.count:,})", icon=":material/block:"):
        table = pd.DataFrame(
            [{"file": r.original_name, "class folder": r.label, "why": r.reject_reason} for r in rejected.data]
        )
        st.dataframe(table, hide_index=True)
        if rejected.count > len(rejected.data):
            st.caption(f"Showing the first {len(rejected.data)}.")
        if st.button("Clear this list", key="rejects.clear", help="The files themselves were never stored."):
            try:
                api.delete_images(token, model.id, [r.id for r in rejected.data])
            except ApiError as err:
                show_problem(err)
            notice("Cleared the list of refused files.")
            st.rerun()
