"""The CData service: the OData layer's ``Service`` for the CData model, from the per-set hooks and actions."""

from __future__ import annotations

from odata_sync.edm.model import Action, EntitySet
from odata_sync.odata.hooks import EntityHooks, Principal
from odata_sync.service import roles
from odata_sync.service.actions import UserActions
from odata_sync.service.auth import Authenticator
from odata_sync.service.connection_actions import ConnectionActions
from odata_sync.service.connections import ConnectionHooks
from odata_sync.service.jobs import JobHooks
from odata_sync.service.secrets import SecretBox
from odata_sync.service.tasks import TaskHooks
from odata_sync.service.transformations import TransformationHooks
from odata_sync.service.users import RequestHooks, UserHooks
from odata_sync.store.engine import Store

ACTION_ALIASES = {"getlogs": "GetJobLog"}


class CDataService:
    """Implements the OData layer's ``Service`` protocol for the CData model."""

    def __init__(self, store: Store, box: SecretBox, authenticator: Authenticator) -> None:
        self.store = store
        self.box = box
        self.authenticator = authenticator
        users = UserHooks(authenticator.invalidate)
        self.connections = ConnectionHooks(box)
        self._hooks: dict[str, EntityHooks] = {
            "Jobs": JobHooks(), "Tasks": TaskHooks(), "Connections": self.connections,
            "Transformations": TransformationHooks(), "Users": users, "Requests": RequestHooks(),
        }
        self._default = EntityHooks()
        user_actions = UserActions(store, users)
        connection_actions = ConnectionActions(store, self.connections)
        self._actions = {"CreateUsers": user_actions.create_users, "ResetAuthToken": user_actions.reset_auth_token,
                         "TestConnection": connection_actions.test_connection,
                         "GetConnectionTables": connection_actions.get_tables,
                         "GetConnectionTableColumns": connection_actions.get_columns}

    def hooks(self, entity_set: str) -> EntityHooks:
        return self._hooks.get(entity_set, self._default)

    def authorize(self, principal: Principal, method: str, target: EntitySet | Action | None) -> None:
        roles.authorize(principal, method, target)

    def register_job_actions(self, actions) -> None:
        """The executor's actions (it is built after the service, on the same store)."""
        self._actions.update({"ExecuteJob": actions.execute_job, "ExecuteQuery": actions.execute_query,
                              "CancelJob": actions.cancel_job, "GetJobStatus": actions.get_job_status,
                              "GetJobLog": actions.get_job_log})

    def action_handler(self, action: Action):
        return self._actions.get(action.name)

    def action_alias(self, name: str) -> str | None:
        return ACTION_ALIASES.get(name.lower())
