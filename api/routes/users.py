"""Users and their personal API tokens (admins; anyone for their own tokens). Every change
is in the audit trail under the caller."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, HTTPException, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from api.deps import SettingsDep, for_roles
from api.models import TokenIssued, TokenOut, UserOut, errors
from clientela.db import session_scope
from clientela.people import users
from clientela.settings import Settings
from models.people import ApiToken, User
from models.schemas import EmailAddress, Name

router = APIRouter(tags=["users"])

Username = Annotated[str, Path(pattern=r"^[a-z][a-z0-9._-]{1,63}$")]
TokenId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Role = Literal["marketer", "approver", "desk", "admin"]
Password = Annotated[str, Field(min_length=users.MIN_PASSWORD, max_length=1024)]
T = TypeVar("T")
EVERYONE = ("admin", "marketer", "approver", "desk")


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Annotated[str, Field(pattern=r"^[a-z][a-z0-9._-]{1,63}$")]
    name: Name = ""
    email: EmailAddress | None = None
    roles: list[Role] = Field(min_length=1, max_length=4)
    password: Password


class RolesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roles: list[Role] = Field(max_length=4)


class PasswordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: Password


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]


def _user(u: User) -> dict[str, Any]:
    return {
        "username": u.username,
        "name": u.name,
        "email": u.email,
        "roles": list(u.roles),
        "active": u.active,
        "created_at": u.created_at.isoformat(),
    }


def _token(t: ApiToken) -> dict[str, Any]:
    def iso(v: Any) -> str | None:
        return v.isoformat() if v is not None else None

    return {
        "id": t.id,
        "name": t.name,
        "created_at": t.created_at.isoformat(),
        "last_used_at": iso(t.last_used_at),
        "revoked_at": iso(t.revoked_at),
    }


async def _change(settings: Settings, fn: Callable[[Session], T]) -> T:
    """``fn`` in one transaction; a refusal is a 404 (no such user) or a 409 (why not)."""

    def run() -> T:
        with session_scope(settings.db_url) as session:
            return fn(session)

    try:
        return await asyncio.to_thread(run)
    except users.UnknownUser as exc:
        raise HTTPException(404, str(exc)) from None
    except users.PeopleError as exc:
        raise HTTPException(409, str(exc)) from None


def _caller(request: Request) -> str:
    actor: str = request.state.actor
    return actor


def _self_or_admin(request: Request, username: str) -> None:
    if _caller(request) != f"user:{username}" and "admin" not in request.state.roles:
        raise HTTPException(403, f"only {username} or an admin may do this")


@router.get(
    "/users",
    dependencies=for_roles("admin"),
    response_model=list[UserOut],
    responses=errors(401, 403),
)
async def user_list(settings: SettingsDep) -> list[dict[str, Any]]:
    return await _change(settings, lambda s: [_user(u) for u in users.all_users(s)])


@router.post(
    "/users",
    status_code=201,
    dependencies=for_roles("admin"),
    response_model=UserOut,
    responses=errors(400, 401, 403, 409, 413),
)
async def user_add(settings: SettingsDep, body: UserIn, request: Request) -> dict[str, Any]:
    """Add a user; 409 if the name is taken."""
    actor = _caller(request)
    return await _change(
        settings,
        lambda s: _user(
            users.add_user(
                s,
                actor=actor,
                username=body.username,
                roles=body.roles,
                password=body.password,
                name=body.name,
                email=str(body.email or ""),
            )
        ),
    )


@router.put(
    "/users/{username}/roles",
    dependencies=for_roles("admin"),
    response_model=UserOut,
    responses=errors(400, 401, 403, 404, 409, 413),
)
async def user_roles(
    settings: SettingsDep, username: Username, body: RolesIn, request: Request
) -> dict[str, Any]:
    actor = _caller(request)
    if actor == f"user:{username}" and "admin" not in body.roles:
        raise HTTPException(409, "an admin cannot take the admin role from themselves")
    return await _change(
        settings,
        lambda s: _user(users.set_roles(s, actor=actor, username=username, roles=body.roles)),
    )


@router.post(
    "/users/{username}/disable",
    dependencies=for_roles("admin"),
    response_model=UserOut,
    responses=errors(401, 403, 404, 409),
)
async def user_disable(settings: SettingsDep, username: Username, request: Request) -> Any:
    """The user can no longer sign in; their tokens and sessions stop working."""
    actor = _caller(request)
    if actor == f"user:{username}":
        raise HTTPException(409, "an admin cannot disable themselves")
    return await _change(
        settings, lambda s: _user(users.disable(s, actor=actor, username=username))
    )


@router.put(
    "/users/{username}/password",
    dependencies=for_roles(*EVERYONE),
    response_model=UserOut,
    responses=errors(400, 401, 403, 404, 413),
)
async def user_password(
    settings: SettingsDep, username: Username, body: PasswordIn, request: Request
) -> Any:
    """Set a password: one's own, or anyone's for an admin."""
    _self_or_admin(request, username)
    actor = _caller(request)

    def run(s: Session) -> dict[str, Any]:
        users.set_password(s, actor=actor, username=username, password=body.password)
        return _user(users.get_user(s, username))

    return await _change(settings, run)


@router.get(
    "/users/{username}/tokens",
    dependencies=for_roles(*EVERYONE),
    response_model=list[TokenOut],
    responses=errors(401, 403, 404),
)
async def token_list(settings: SettingsDep, username: Username, request: Request) -> Any:
    _self_or_admin(request, username)
    return await _change(settings, lambda s: [_token(t) for t in users.tokens_of(s, username)])


@router.post(
    "/users/{username}/tokens",
    status_code=201,
    dependencies=for_roles(*EVERYONE),
    response_model=TokenIssued,
    responses=errors(400, 401, 403, 404, 409, 413),
)
async def token_issue(
    settings: SettingsDep, username: Username, body: TokenIn, request: Request
) -> Any:
    """A new personal token for the user, shown this once."""
    _self_or_admin(request, username)
    actor = _caller(request)

    def run(s: Session) -> dict[str, Any]:
        row, token = users.issue_token(s, actor=actor, username=username, name=body.name)
        return {**_token(row), "token": token}

    return await _change(settings, run)


@router.post(
    "/users/tokens/{token_id}/revoke",
    dependencies=for_roles(*EVERYONE),
    response_model=TokenOut,
    responses=errors(401, 403, 404),
)
async def token_revoke(settings: SettingsDep, token_id: TokenId, request: Request) -> Any:
    """Revoke a token (its owner's, or any for an admin); revoking twice changes nothing."""
    actor = _caller(request)
    admin = "admin" in request.state.roles

    def run(s: Session) -> dict[str, Any]:
        row = s.get(ApiToken, token_id)
        owner = s.get(User, row.user_id) if row is not None else None
        if row is None or owner is None or (not admin and actor != f"user:{owner.username}"):
            raise users.UnknownUser(f"no token {token_id} of yours")
        return _token(users.revoke_token(s, actor=actor, token_id=token_id))

    return await _change(settings, run)
