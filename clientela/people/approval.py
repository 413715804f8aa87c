"""Four eyes: who may decide on a campaign.

Once a team has users (`clientela users add`), the name a decision is made by must be an
active user with the approver role, and not the person who created the campaign (unless
``CLIENTELA_SELF_APPROVAL`` allows it, for a team of one). An installation without users
keeps the name as free text, as before people existed, so that a single operator can work.
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from clientela.people.users import PeopleError
from models.people import AuditEvent, User


def has_users(session: Session) -> bool:
    return session.exec(select(User.id).limit(1)).first() is not None


def check_creator(session: Session, by: str | None) -> None:
    """A campaign is created by a marketer (or an admin), once people exist."""
    if not has_users(session):
        return
    if not by:
        raise PeopleError("say who creates the campaign: --by USERNAME (a marketer)")
    _user_with(session, by, ("marketer", "admin"), "create campaigns")


def check_decider(session: Session, campaign_id: str, by: str, *, self_approval: bool) -> None:
    """``by`` may approve, reject or go on with this campaign; PeopleError says why not."""
    if not has_users(session):
        return
    _user_with(session, by, ("approver",), "decide on campaigns")
    created = session.exec(
        select(AuditEvent)
        .where(
            AuditEvent.action == "campaign.created", AuditEvent.subject == f"campaign:{campaign_id}"
        )
        .order_by(col(AuditEvent.id).desc())
    ).first()
    creator = (created.detail or {}).get("by") if created is not None else None
    if creator == by and not self_approval:
        raise PeopleError(
            f"{by} created {campaign_id}, so another approver decides on it (four eyes); "
            "set CLIENTELA_SELF_APPROVAL=true for a team of one"
        )


def _user_with(session: Session, username: str, roles: tuple[str, ...], what: str) -> User:
    user = session.exec(select(User).where(User.username == username)).first()
    if user is None or not user.active:
        raise PeopleError(
            f"{username!r} is not an active user; `clientela users list` shows who can {what}"
        )
    if not set(user.roles) & set(roles):
        raise PeopleError(
            f"{username} may not {what}: it takes the role {' or '.join(roles)} "
            f"(`clientela users roles {username} --role {roles[0]}`)"
        )
    return user
