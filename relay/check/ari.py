"""Asterisk through ARI: reachable, credentials accepted, its version, the app name free."""

from __future__ import annotations

from relay.ari import AriClient, AriError
from relay.check import FAIL, OK, WARN, Check
from relay.config import Settings

GROUP = "asterisk (ARI)"
MIN_MAJOR = 20


def check(settings: Settings) -> tuple[bool, bool, list[Check]]:
    """(ARI usable, app free, checks)."""
    ari = settings.tree["ari"]
    client = AriClient(ari["url"], ari["username"], ari["password"], ari["app"],
                       timeout=ari["request_timeout_s"], pool_size=2)
    out: list[Check] = []
    try:
        try:
            info = client.request("GET", "/asterisk/info")
        except AriError as exc:
            out.append(_connection_failure(exc, client.base, ari["username"]))
            return False, False, out
        out.append(Check(GROUP, "reachable", OK, f"{client.base} answers"))
        out.append(Check(GROUP, "credentials", OK, f"user {ari['username']!r} accepted"))
        out.append(_version(info))
        free, app_check = _app(client, ari["app"])
        out.append(app_check)
        return True, free, out
    finally:
        client.close()


def _connection_failure(exc: AriError, base: str, user: str) -> Check:
    if exc.status == 401:
        return Check(GROUP, "credentials", FAIL, f"{base}: 401 for user {user!r}",
                     "wrong ARI_USERNAME/ARI_PASSWORD (ari.username, ari.password): they "
                     "must match a user in Asterisk's ari.conf ([USER] type=user, "
                     "password=...)")
    if exc.status == 404:
        return Check(GROUP, "reachable", FAIL, f"{base}/asterisk/info: 404 (an HTTP server "
                     "answers, but not ARI)",
                     "ARI not enabled: http.conf enabled=yes, ari.conf [general] enabled=yes, "
                     "then 'module reload res_ari.so'; and check ARI_URL's host and port")
    if exc.status == 0:
        return Check(GROUP, "reachable", FAIL, f"cannot reach {base}: {exc.message}",
                     "check ARI_URL (ari.url): Asterisk's http.conf bindaddr/bindport "
                     "(default port 8088), and any firewall between relay and Asterisk")
    return Check(GROUP, "reachable", FAIL, f"{base}/asterisk/info: {exc.status} "
                 f"{exc.message}", "see Asterisk's log (ARI, http.conf)")


def _version(info: dict) -> Check:
    version = str(((info or {}).get("system") or {}).get("version") or "")
    try:
        major = int(version.split(".")[0])
    except ValueError:
        return Check(GROUP, "version", WARN, f"Asterisk {version or '(no version given)'}: "
                     "cannot tell the release", f"relay is tested on Asterisk {MIN_MAJOR}+")
    if major < MIN_MAJOR:
        return Check(GROUP, "version", WARN, f"Asterisk {version}, older than {MIN_MAJOR}",
                     f"upgrade to Asterisk {MIN_MAJOR} or later (22 LTS): relay relies on "
                     "ARI externalMedia and move as they behave there")
    return Check(GROUP, "version", OK, f"Asterisk {version}")


def _app(client: AriClient, app: str) -> tuple[bool, Check]:
    try:
        found = client.request("GET", f"/applications/{app}")
    except AriError as exc:
        if exc.status == 404:
            return True, Check(GROUP, "app name", OK, f"{app!r} is free (not registered on "
                               "Asterisk)")
        return False, Check(GROUP, "app name", FAIL, f"GET /applications/{app}: {exc.status} "
                            f"{exc.message}", "see Asterisk's log")
    channels = len((found or {}).get("channel_ids") or [])
    return False, Check(
        GROUP, "app name", FAIL,
        f"{app!r} is registered on Asterisk ({channels} channel(s) in it): an events "
        "connection holds it (a running relay serve, or another program), or one that "
        "stopped left channels there. ARI does not say which; connecting would replace a live "
        "connection (it would get ApplicationReplaced), so the media check did not use it",
        "if it is your own relay serve, that is expected: stop it to check the media path, "
        "or run relay check --media-app relay-check-media; otherwise choose another "
        "ARI_APP_NAME (and Stasis(NAME) in the dialplan)")
