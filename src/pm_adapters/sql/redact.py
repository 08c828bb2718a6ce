"""Database URL redaction: passwords never reach logs, errors or output."""

from __future__ import annotations

import re

import sqlalchemy as sa

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:/@]*):(?P<pw>[^@]*)@")
_PARAM = re.compile(r"(?i)(password=)[^&\s]*")


def redact_url(url: object) -> str:
    """The URL without its password (``postgresql+psycopg://pm@db:5432/pm``)."""
    text = str(url) if not isinstance(url, sa.URL) else url.render_as_string(hide_password=False)
    try:
        parsed = sa.engine.make_url(text)
    except Exception:
        return redact_text(text)
    query = {k: v for k, v in parsed.query.items() if k.lower() != "password"}
    cleaned = parsed.set(password=None, query=query)
    return redact_text(cleaned.render_as_string(hide_password=False))


def redact_text(text: str, url: object | None = None) -> str:
    """``text`` with any URL password (and the given URL's password) removed."""
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}@", text)
    out = _PARAM.sub(r"\1***", out)
    if url is not None:
        try:
            password = sa.engine.make_url(str(url) if not isinstance(url, sa.URL) else url).password
        except Exception:
            password = None
        if password:
            out = out.replace(str(password), "***")
    return out
