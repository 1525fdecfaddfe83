"""What the tests share: signed-in clients and forms (web), arranged requests (access),
waiting (waiting), real app processes (processes), receivers for SMTP and webhooks
(receivers, also a pytest plugin), a randomuser-compatible API (randomuser_server), an SSE
client (sse_client) and the browser harness (browser). Fixtures live in the conftest files."""
