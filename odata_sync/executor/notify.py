"""Events around a run: PreJob / PostJob web hooks and e-mail notifications.

A hook is an http(s) URL that receives a JSON POST; a PreJob hook answering ``{"CancelJob": true}`` cancels the run.
A hook that fails or does not answer in time is logged and never holds the run. Mail goes through the SMTP server
of the ODATA_SYNC_SMTP_* settings (stdlib smtplib, in a thread).
"""

from __future__ import annotations

import asyncio
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage

import aiohttp

HOOK_TIMEOUT = 10.0


class HookFailed(Exception):
    pass


async def call_hook(url: str, payload: dict, timeout: float = HOOK_TIMEOUT) -> dict | None:
    """POST ``payload`` to ``url``; the JSON object it answers (None for anything else)."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session, \
                session.post(url, json=payload) as response:
            if response.status >= 400:
                raise HookFailed(f"{url} answered HTTP {response.status}")
            try:
                body = await response.json(content_type=None)
            except ValueError:
                return None
            return body if isinstance(body, dict) else None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise HookFailed(f"{url}: {type(exc).__name__} {exc}".strip()) from exc


def wants_cancel(answer: dict | None) -> bool:
    if not answer:
        return False
    value = next((v for k, v in answer.items() if k.lower() == "canceljob"), False)
    return value is True or str(value).lower() == "true"


@dataclass(frozen=True)
class SmtpSettings:
    host: str | None = None
    port: int = 25
    user: str | None = None
    password: str | None = None
    sender: str = "odata-sync@localhost"
    starttls: bool = False

    @property
    def configured(self) -> bool:
        return bool(self.host)


async def send_mail(smtp: SmtpSettings, to: str, subject: str, body: str) -> None:
    recipients = [a.strip() for a in to.replace(";", ",").split(",") if a.strip()]
    if not recipients:
        return
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = smtp.sender, ", ".join(recipients), subject
    message.set_content(body)

    def deliver() -> None:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=HOOK_TIMEOUT) as client:
            if smtp.starttls:
                client.starttls()
            if smtp.user:
                client.login(smtp.user, smtp.password or "")
            client.send_message(message)

    try:
        await asyncio.to_thread(deliver)
    except (OSError, smtplib.SMTPException) as exc:
        raise HookFailed(f"mail to {', '.join(recipients)} failed: {exc}") from exc
