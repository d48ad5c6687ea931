"""The role matrix of the CData API: who may do what to which entity set or action."""

from __future__ import annotations

from odata_sync.edm.model import Action, EntitySet
from odata_sync.errors import Forbidden
from odata_sync.odata.hooks import Principal

ADMIN, STANDARD, JOB_CREATOR, SUPPORT = "cdata_admin", "cdata_standard", "cdata_job_creator", "cdata_support"
ROLES = (ADMIN, STANDARD, JOB_CREATOR, SUPPORT)

READ, WRITE = "r", "w"
# entity set -> role -> allowed access ("r", "rw" or "")
SET_ACCESS: dict[str, dict[str, str]] = {
    "Jobs": {STANDARD: "rw", JOB_CREATOR: "rw", SUPPORT: "r"},
    "Tasks": {STANDARD: "rw", JOB_CREATOR: "rw", SUPPORT: "r"},
    "Transformations": {STANDARD: "rw", JOB_CREATOR: "rw", SUPPORT: "r"},
    "Connections": {STANDARD: "rw", JOB_CREATOR: "r", SUPPORT: "r"},
    "History": {STANDARD: "r", JOB_CREATOR: "r", SUPPORT: "r"},
    "TaskHistory": {STANDARD: "r", JOB_CREATOR: "r", SUPPORT: "r"},
    "Users": {STANDARD: "r", JOB_CREATOR: "r", SUPPORT: "r"},  # rows limited to the caller (see the Users hooks)
    "Requests": {},
}
JOB_ACTIONS = {"ExecuteJob", "ExecuteQuery", "CancelJob", "GetJobStatus", "GetJobLog"}
CONNECTION_ACTIONS = {"TestConnection", "GetConnectionTables", "GetConnectionTableColumns"}
ACTION_ACCESS: dict[str, set[str]] = {
    STANDARD: JOB_ACTIONS | CONNECTION_ACTIONS | {"ResetAuthToken"},
    JOB_CREATOR: JOB_ACTIONS | CONNECTION_ACTIONS | {"ResetAuthToken"},
    SUPPORT: JOB_ACTIONS | {"ResetAuthToken"},
}


def parse_roles(text: str) -> list[str]:
    return [r.strip() for r in text.split(",") if r.strip()]


def authorize(principal: Principal, method: str, target: EntitySet | Action | None) -> None:
    if principal.has(ADMIN) or target is None:
        return
    if isinstance(target, Action):
        if any(target.name in ACTION_ACCESS.get(role, ()) for role in principal.roles):
            return
        raise Forbidden(f"Your role does not allow the action {target.name}")
    need = READ if method in ("GET", "HEAD") else WRITE
    if any(need in SET_ACCESS.get(target.name, {}).get(role, "") for role in principal.roles):
        return
    verb = "read" if need == READ else "change"
    raise Forbidden(f"Your role does not allow you to {verb} {target.name}")
