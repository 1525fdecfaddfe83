"""The operations console: DBOS workflows (list, one, cancel/resume/fork), queues,
schedules and executors, operator batches and the graceful shutdown."""

from __future__ import annotations

from webapp.web.ops import batches, runtime, workflows

routes = [*workflows.routes, *runtime.routes, *batches.routes]
