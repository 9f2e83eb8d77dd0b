"""Reviewer tokens for the review web app and its HTTP API (``shotline review token``).

A token is ``shl_`` plus 43 URL-safe characters (256 random bits). It is shown once, when
created; the table keeps only its sha256 (a slow hash buys nothing against 256 random bits,
and a fast one keeps every request's check cheap). A token speaks for one reviewer name;
the brand's ``reviewers:`` list still decides what that name may approve.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from catalog.models import ReviewerToken, utcnow
from catalog.review import Reviewer, ReviewError, clean_reviewer_name

TOKEN_PREFIX = "shl_"
MAX_TOKEN_CHARS = 200  # anything longer is not one of ours: refused before hashing
MAX_EXPIRES_DAYS = 3650
# How stale ``last_used_at`` may get before a request writes it again: one UPDATE per token
# per minute, not one per request.
TOUCH_EVERY = timedelta(minutes=1)


class TokenError(ReviewError):
    """A token command that cannot be applied (bad name, unknown token id)."""


@dataclass(frozen=True)
class TokenInfo:
    """A token as ``token list`` shows it (never the token itself)."""

    id: int
    name: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    sessions_after: datetime | None = None

    def session_ended(self, logged_in_at: float) -> bool:
        """Whether a browser session made at ``logged_in_at`` (epoch seconds) was logged
        out since (``end_sessions``)."""
        if self.sessions_after is None:
            return False
        return logged_in_at <= _aware(self.sessions_after).timestamp()

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and _aware(self.expires_at) <= utcnow():
            return "expired"
        return "active"


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _aware(value: datetime) -> datetime:
    """SQLite hands timestamps back naive (they were stored as UTC)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _info(row: ReviewerToken) -> TokenInfo:
    return TokenInfo(
        row.id,
        row.name,
        row.created_at,
        row.expires_at,
        row.revoked_at,
        row.last_used_at,
        row.sessions_after,
    )


def create_token(
    session: Session, name: str, expires_days: int | None = None
) -> tuple[TokenInfo, str]:
    """A new token for reviewer ``name``: its record and the token text (shown only now)."""
    clean = clean_reviewer_name(name)
    if clean is None:
        raise TokenError("a token needs a reviewer name")
    if expires_days is not None and not 1 <= expires_days <= MAX_EXPIRES_DAYS:
        raise TokenError(f"--expires must be 1..{MAX_EXPIRES_DAYS} days")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = utcnow() + timedelta(days=expires_days) if expires_days else None
    row = ReviewerToken(name=clean, token_sha256=token_sha256(token), expires_at=expires)
    session.add(row)
    session.flush()
    return _info(row), token


def list_tokens(session: Session) -> list[TokenInfo]:
    return [_info(r) for r in session.scalars(select(ReviewerToken).order_by(ReviewerToken.id))]


def end_sessions(session: Session, token_id: int) -> None:
    """Log out: every browser session made with the token until now ends (a copied cookie
    included); the token itself stays good for a new login."""
    session.execute(
        update(ReviewerToken).where(ReviewerToken.id == token_id).values(sessions_after=utcnow())
    )


def revoke_token(session: Session, token_id: int) -> TokenInfo:
    """Revoke one token by id (idempotent); ``TokenError`` naming an unknown id."""
    row = session.get(ReviewerToken, token_id)
    if row is None:
        raise TokenError(f"token {token_id}: no such token")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    return _info(row)


def _usable(row: ReviewerToken | None) -> ReviewerToken | None:
    if row is None or row.revoked_at is not None:
        return None
    if row.expires_at is not None and _aware(row.expires_at) <= utcnow():
        return None
    return row


def _touch(session: Session, row: ReviewerToken) -> None:
    now = utcnow()
    if row.last_used_at is None or _aware(row.last_used_at) + TOUCH_EVERY < now:
        session.execute(
            update(ReviewerToken).where(ReviewerToken.id == row.id).values(last_used_at=now)
        )


def authenticate(session: Session, token: str) -> TokenInfo | None:
    """The active token ``token`` is, or None (unknown, revoked, expired, malformed)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_CHARS:
        return None
    row = _usable(
        session.scalar(
            select(ReviewerToken).where(ReviewerToken.token_sha256 == token_sha256(token))
        )
    )
    if row is None:
        return None
    _touch(session, row)
    return _info(row)


def active_token(session: Session, token_id: int) -> TokenInfo | None:
    """The token a browser session was made with, while it is still active (a revoked or
    expired token ends its sessions at their next request)."""
    row = _usable(session.get(ReviewerToken, token_id))
    return _info(row) if row is not None else None


def token_reviewer(info: TokenInfo) -> Reviewer:
    """Who decides with this token: its name, authenticated by the token's id."""
    return Reviewer(info.name, f"token:{info.id}")
