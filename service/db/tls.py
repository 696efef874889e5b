"""libpq's TLS query parameters of a database URL, as asyncpg's `ssl`."""

from __future__ import annotations

import ssl
from typing import Any

from sqlalchemy.engine import URL


def tls_options(url: URL) -> tuple[URL, dict[str, Any]]:
    """The URL without `sslmode` and `sslrootcert` (checked by settings.py), and
    the connect arguments that do what they say:

    - disable, allow, prefer: as libpq does them (asyncpg knows these modes);
    - require: encrypted, the certificate is not checked (unless sslrootcert is
      given: then, as libpq does, it must be signed by that CA);
    - verify-ca: signed by sslrootcert's CA (or a CA the system trusts);
    - verify-full: verify-ca, and the certificate names the host of the URL.
    """
    mode = url.query.get("sslmode")
    root = url.query.get("sslrootcert")
    url = url.difference_update_query(["sslmode", "sslrootcert"])
    if not isinstance(mode, str):
        return url, {}
    if mode in {"disable", "allow", "prefer"}:
        return url, {"ssl": mode}
    context = ssl.create_default_context(cafile=root if isinstance(root, str) else None)
    context.check_hostname = mode == "verify-full"
    if mode == "require" and not isinstance(root, str):
        context.verify_mode = ssl.CERT_NONE
    return url, {"ssl": context}
