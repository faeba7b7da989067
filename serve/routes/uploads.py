"""Reading uploads without holding them whole in memory, with size limits that give a clear answer."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from fastapi import Request, UploadFile
from starlette.concurrency import run_in_threadpool

from pipelines.errors import InvalidInput, TooLarge

CHUNK = 1 << 20


def _mb(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:,.0f} MB"


def check_content_length(request: Request, limit: int) -> None:
    """Refuse an upload whose declared size is over the limit before reading any of it."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"This upload is {_mb(int(declared))}; the limit is {_mb(limit)}. Split it into smaller parts.")


async def read_upload(file: UploadFile, limit: int) -> bytes:
    """The bytes of one uploaded file (pictures are small), refusing anything over `limit`."""
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"'{file.filename}' is larger than {_mb(limit)}, the limit for one picture.")
    return data


async def save_upload(file: UploadFile, target: Path, limit: int) -> int:
    """Copy an uploaded file (already spooled to disk by the server) to `target`; returns its size."""

    def copy() -> int:
        file.file.seek(0, os.SEEK_END)
        size = file.file.tell()
        if size > limit:
            raise TooLarge(f"'{file.filename}' is {_mb(size)}; the limit is {_mb(limit)}.")
        file.file.seek(0)
        with open(target, "wb") as out:
            shutil.copyfileobj(file.file, out, CHUNK)
        return size

    return await run_in_threadpool(copy)


async def stream_body(request: Request, target: Path, limit: int) -> int:
    """Stream a raw request body (Content-Type: application/zip) to `target`, chunk by chunk."""
    size = 0
    with open(target, "wb") as out:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"This upload is larger than {_mb(limit)}, the limit. Split it into smaller parts.")
            out.write(chunk)
    if size == 0:
        raise InvalidInput("The upload was empty. Send the zip file as the request body or as the form field 'file'.")
    return size
