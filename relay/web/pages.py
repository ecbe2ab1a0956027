"""The dashboard's files: the page, its script and style, the login page (package data).

Owns: serving the files under relay/web/static/ by name (a fixed pattern, so no path can leave
the folder), with their content types; the login page with an optional error line. The files
are read once and kept in memory. No build step: plain HTML, CSS and JavaScript.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Optional

from relay.web.http import HttpError, Response

STATIC_DIR = Path(__file__).resolve().parent / "static"
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*\.(html|css|js|svg|png|ico)$")
TYPES = {
    "html": "text/html; charset=utf-8", "css": "text/css; charset=utf-8",
    "js": "text/javascript; charset=utf-8", "svg": "image/svg+xml", "png": "image/png",
    "ico": "image/x-icon",
}
ERROR_MARK = "<!--login-error-->"

_cache: dict[str, bytes] = {}


def _read(name: str) -> Optional[bytes]:
    if name not in _cache:
        path = STATIC_DIR / name
        if not NAME.match(name) or not path.is_file():
            return None
        _cache[name] = path.read_bytes()
    return _cache[name]


def static_file(name: str) -> Response:
    data = _read(name)
    if data is None:
        raise HttpError(404, f"no such file: {name}")
    kind = name.rsplit(".", 1)[1]
    return Response(200, data, TYPES[kind], [("Cache-Control", "no-cache")])


def index_page() -> Response:
    return static_file("index.html")


def login_page(error: str = "", status: int = 200) -> Response:
    data = _read("login.html")
    if data is None:
        raise HttpError(500, "the login page is missing from the package")
    text = data.decode("utf-8")
    if error:
        text = text.replace(ERROR_MARK, f'<p class="login-error">{html.escape(error)}</p>')
    return Response(status, text.encode("utf-8"), TYPES["html"])
