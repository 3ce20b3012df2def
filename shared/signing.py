"""Standard Webhooks signing: the ``whsec_`` secret and the three headers of a signed delivery.

Apart from shared/webhooks.py so that the settings can check the secret at start without
importing the lifecycle (shared/jobs.py) that the webhooks subscribe to.
"""
from __future__ import annotations

import base64
import binascii
import time
from datetime import datetime, timezone

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"


def check_secret(secret: str) -> bytes:
    """The key of a ``whsec_`` secret; ValueError (never showing the secret) if it is not one."""
    how = ("DREAMQ_WEBHOOK_SECRET must be `whsec_` followed by the base64 of 24 to 64 random bytes, e.g. "
           "python -c \"import base64,secrets; print('whsec_' + base64.b64encode(secrets.token_bytes(32)).decode())\"")
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(how)
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(how) from None
    if not 24 <= len(key) <= 64:
        raise ValueError(how)
    return key


def new_secret() -> str:
    import secrets

    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signed_headers(secret: str, msg_id: str, body: str, timestamp: float | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt (signed now: receivers refuse old timestamps)."""
    when = datetime.fromtimestamp(int(time.time() if timestamp is None else timestamp), tz=timezone.utc)
    signature = Webhook(secret).sign(msg_id=msg_id, timestamp=when, data=body)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(when.timestamp())), "webhook-signature": signature}
