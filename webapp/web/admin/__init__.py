"""Admin pages: people, resources, agents, bulk imports, the error and audit logs, the outbox."""

from __future__ import annotations

from webapp.web.admin import agents, imports, logs, notifications, resources, users
from webapp.web.security import Access, guarded_route

routes = [
    *users.routes,
    *resources.routes,
    *agents.routes,
    *imports.routes,
    *logs.routes,
    guarded_route("/notifications", notifications.notifications_page, access=Access.admin),
]
