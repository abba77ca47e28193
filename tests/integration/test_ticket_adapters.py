"""The HTTP ticket adapters against real HTTP servers: small but faithful fakes of the generic
ticket API, Jira REST v2 and GitHub issues, served by aiohttp on 127.0.0.1 in the test's loop.

The fake records every request and can be told to answer an error status, or to do the work and
then stall past the client's timeout (a lost answer), the next N times a route is called.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from aiohttp import web

from plugwatch.tickets.adapters import (
    GenericHttpTickets,
    GitHubTickets,
    JiraTickets,
    RetryPolicy,
    TicketContent,
    TicketRef,
    TicketRejected,
    TicketSystem,
    TicketUnavailable,
    build_http_adapter,
)

TOKEN = "s3cr3t-token-do-not-leak"
EMAIL = "bot@example.com"
REPO = "acme/plugins"
JSON = "application/json"
FAST = RetryPolicy(attempts=5, first_delay_s=0.001, max_delay_s=0.005, timeout_s=2.0)
STALLING = RetryPolicy(attempts=3, first_delay_s=0.01, max_delay_s=0.05, timeout_s=0.2)

CONTENT = TicketContent(
    title="Plugin acme/resizer: NullPointerException in resize()",
    body="## Debug report\n\nStack excerpt (masked)",
    tenant_id="t-1",
    plugin_id="resizer",
    fingerprint="fp-abc",
    idempotency_key="pw-3fa2c0ffee",
    severity="critical",
    owner="team-images",
    assignee="alice",
    report_url="https://plugwatch.example/reports/r-1",
    labels=("plugwatch", "tenant t-1"),
)


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any


@dataclass
class Fault:
    status: int | None = None  # answer this instead of doing the work
    stall_s: float | None = None  # do the work, then hold the answer this long
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None  # the error answer's JSON; a short message when None


class FakeTicketServer:
    """The generic ticket API, Jira REST v2 and GitHub issues in one aiohttp app."""

    def __init__(self, *, jira_cloud: bool = False, echo_auth: bool = False) -> None:
        self.requests: list[Seen] = []
        self.faults: dict[tuple[str, str], list[Fault]] = {}
        self.jira_cloud = jira_cloud  # /rest/api/2/search answers 410 Gone, as on Jira Cloud
        self.echo_auth = echo_auth  # a 401 body that quotes the credentials it got (a leak test)
        self.generic: dict[str, dict[str, Any]] = {}  # id -> ticket
        self.jira: dict[str, dict[str, Any]] = {}  # key -> issue
        self.jira_transitions = [
            {"id": "11", "name": "Start Progress", "to": "In Progress"},
            {"id": "31", "name": "Done", "to": "Done"},
        ]
        self.github: dict[int, dict[str, Any]] = {}  # number -> issue
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # -- programming and inspection -------------------------------------------------------
    def fail(self, method: str, path: str, *faults: Fault) -> None:
        self.faults.setdefault((method, path), []).extend(faults)

    def seen(self, method: str, path: str) -> list[Seen]:
        return [r for r in self.requests if r.method == method and r.path == path]

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/internal/ticket/create", self._generic_create)
        app.router.add_get("/internal/ticket/lookup", self._generic_lookup)
        app.router.add_post("/internal/ticket/{op:update|comment|close}", self._generic_op)
        app.router.add_post("/rest/api/2/issue", self._jira_create)
        app.router.add_get("/rest/api/2/search", self._jira_search)
        app.router.add_get("/rest/api/2/search/jql", self._jira_search)
        app.router.add_get("/rest/api/2/issue/{key}", self._jira_get)
        app.router.add_put("/rest/api/2/issue/{key}", self._jira_put)
        app.router.add_post("/rest/api/2/issue/{key}/comment", self._jira_comment)
        app.router.add_get("/rest/api/2/issue/{key}/transitions", self._jira_transitions)
        app.router.add_post("/rest/api/2/issue/{key}/transitions", self._jira_transition)
        app.router.add_post("/repos/{owner}/{name}/issues", self._gh_create)
        app.router.add_get("/repos/{owner}/{name}/issues", self._gh_list)
        app.router.add_patch("/repos/{owner}/{name}/issues/{number}", self._gh_patch)
        app.router.add_post("/repos/{owner}/{name}/issues/{number}/comments", self._gh_comment)
        app.router.add_post("/repos/{owner}/{name}/issues/{number}/labels", self._gh_labels)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        self._closing.set()  # ends held answers at once
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[..., Awaitable[web.StreamResponse]]):
        body = await request.read()
        self.requests.append(Seen(
            request.method, request.path, dict(request.query),
            {k.lower(): v for k, v in request.headers.items()},
            await request.json() if body else None,
        ))
        if not self._authorized(request):
            detail = {"message": "Bad credentials"}
            if self.echo_auth:
                detail["received"] = request.headers.get("Authorization", "")
            return web.json_response(detail, status=401)
        queue = self.faults.get((request.method, request.path))
        fault = queue.pop(0) if queue else None
        if fault is not None and fault.status is not None:
            body = fault.body if fault.body is not None else {"message": f"injected {fault.status}"}
            return web.json_response(body, status=fault.status, headers=fault.headers)
        response = await handler(request)
        if fault is not None and fault.stall_s is not None:
            try:
                await asyncio.wait_for(self._closing.wait(), fault.stall_s)
            except TimeoutError:
                pass
        return response

    def _authorized(self, request: web.Request) -> bool:
        got = request.headers.get("Authorization", "")
        basic = "Basic " + base64.b64encode(f"{EMAIL}:{TOKEN}".encode()).decode()
        return got in (f"Bearer {TOKEN}", basic)

    # -- the generic ticket API ---------------------------------------------------------------
    async def _generic_create(self, request: web.Request) -> web.Response:
        data = await request.json()
        key = data.get("idempotency_key")
        if not key or request.headers.get("Idempotency-Key") != key:
            error = {"error": "Idempotency-Key header must equal idempotency_key"}
            return web.json_response(error, status=400)
        for ticket in self.generic.values():
            if ticket["idempotency_key"] == key:
                return web.json_response({"id": ticket["id"], "url": ticket["url"]}, status=200)
        ticket_id = f"T-{len(self.generic) + 1}"
        ticket = {**data, "id": ticket_id, "url": f"{self.base_url}/t/{ticket_id}", "comments": [],
                  "status": "open", "occurrences": 1, "last_seen_ms": None}
        self.generic[ticket_id] = ticket
        return web.json_response({"id": ticket_id, "url": ticket["url"]}, status=201)

    async def _generic_lookup(self, request: web.Request) -> web.Response:
        key = request.query.get("idempotency_key")
        for ticket in self.generic.values():
            if ticket["idempotency_key"] == key:
                return web.json_response({"id": ticket["id"], "url": ticket["url"]})
        return web.json_response({"error": "no ticket for that idempotency key"}, status=404)

    async def _generic_op(self, request: web.Request) -> web.Response:
        data = await request.json()
        ticket = self.generic.get(data.get("id"))
        if ticket is None:
            return web.json_response({"error": "no such ticket"}, status=404)
        op = request.match_info["op"]
        if op == "update":
            for name in ("title", "body", "labels", "occurrences", "last_seen_ms"):
                ticket[name] = data[name]
        elif op == "comment":
            ticket["comments"].append(data["body"])
        else:
            ticket["comments"].append(data["comment"])
            ticket["status"] = "closed"
        return web.json_response({"id": ticket["id"]})

    # -- Jira REST v2 ------------------------------------------------------------------------
    def _jira_issue(self, request: web.Request) -> dict[str, Any]:
        issue = self.jira.get(request.match_info["key"])
        if issue is None:
            raise web.HTTPNotFound(text='{"errorMessages":["Issue does not exist"]}', content_type=JSON)
        return issue

    async def _jira_create(self, request: web.Request) -> web.Response:
        fields = (await request.json())["fields"]
        errors = {name: "required" for name in ("project", "summary", "issuetype") if not fields.get(name)}
        if any(" " in label for label in fields.get("labels", [])):
            errors["labels"] = "labels cannot contain spaces"
        if len(fields.get("summary", "")) > 255:
            errors["summary"] = "must be less than 255 characters"
        if errors:
            return web.json_response({"errorMessages": [], "errors": errors}, status=400)
        key = f"{fields['project']['key']}-{len(self.jira) + 1}"
        self.jira[key] = {"key": key, "fields": dict(fields), "status": "To Do", "comments": [],
                          "transitions": []}
        return web.json_response({"id": str(10000 + len(self.jira)), "key": key,
                                  "self": f"{self.base_url}/rest/api/2/issue/{key}"}, status=201)

    async def _jira_search(self, request: web.Request) -> web.Response:
        if self.jira_cloud and request.path == "/rest/api/2/search":
            return web.json_response({"errorMessages": ["The requested API has been removed."]}, status=410)
        match = re.fullmatch(r'labels = "([^"]+)" ORDER BY created ASC', request.query.get("jql", ""))
        if match is None:
            return web.json_response({"errorMessages": ["unsupported JQL"]}, status=400)
        hits = [i for i in self.jira.values() if match.group(1) in i["fields"].get("labels", [])]
        limit = int(request.query.get("maxResults", 50))
        return web.json_response({"startAt": 0, "maxResults": limit, "total": len(hits),
                                  "issues": [{"key": i["key"], "fields": {}} for i in hits[:limit]]})

    async def _jira_get(self, request: web.Request) -> web.Response:
        issue = self._jira_issue(request)
        category = "done" if issue["status"] == "Done" else "new"
        return web.json_response({"key": issue["key"], "fields": {
            "status": {"name": issue["status"], "statusCategory": {"key": category}}}})

    async def _jira_put(self, request: web.Request) -> web.Response:
        issue = self._jira_issue(request)
        data = await request.json()
        issue["fields"].update(data.get("fields", {}))
        for op in data.get("update", {}).get("labels", []):
            labels = issue["fields"].setdefault("labels", [])
            if "add" in op and op["add"] not in labels:
                labels.append(op["add"])
            if "remove" in op and op["remove"] in labels:
                labels.remove(op["remove"])
        return web.Response(status=204)

    async def _jira_comment(self, request: web.Request) -> web.Response:
        issue = self._jira_issue(request)
        issue["comments"].append((await request.json())["body"])
        return web.json_response({"id": str(len(issue["comments"]))}, status=201)

    def _available(self, issue: dict[str, Any]) -> list[dict[str, Any]]:
        return [t for t in self.jira_transitions if t["to"] != issue["status"]]

    async def _jira_transitions(self, request: web.Request) -> web.Response:
        issue = self._jira_issue(request)
        return web.json_response({"transitions": [
            {"id": t["id"], "name": t["name"], "to": {"name": t["to"]}} for t in self._available(issue)]})

    async def _jira_transition(self, request: web.Request) -> web.Response:
        issue = self._jira_issue(request)
        wanted = (await request.json())["transition"]["id"]
        chosen = next((t for t in self._available(issue) if t["id"] == wanted), None)
        if chosen is None:
            return web.json_response({"errorMessages": ["Transition id is not valid"]}, status=400)
        issue["status"] = chosen["to"]
        issue["transitions"].append(wanted)
        return web.Response(status=204)

    # -- GitHub issues -------------------------------------------------------------------------
    def _gh_check(self, request: web.Request) -> None:
        if request.headers.get("X-GitHub-Api-Version") != "2022-11-28":
            raise web.HTTPBadRequest(text='{"message":"Unsupported API version"}', content_type=JSON)

    def _gh_issue(self, request: web.Request) -> dict[str, Any]:
        self._gh_check(request)
        issue = self.github.get(int(request.match_info["number"]))
        if issue is None:
            raise web.HTTPNotFound(text='{"message":"Not Found"}', content_type=JSON)
        return issue

    def _gh_json(self, issue: dict[str, Any]) -> dict[str, Any]:
        return {"number": issue["number"], "title": issue["title"], "body": issue["body"],
                "state": issue["state"], "html_url": issue["html_url"],
                "labels": [{"name": n} for n in issue["labels"]],
                "assignees": [{"login": a} for a in issue["assignees"]]}

    async def _gh_create(self, request: web.Request) -> web.Response:
        self._gh_check(request)
        data = await request.json()
        if not data.get("title"):
            return web.json_response({"message": "Validation Failed"}, status=422)
        number = len(self.github) + 1
        repo = f"{request.match_info['owner']}/{request.match_info['name']}"
        self.github[number] = {
            "number": number, "title": data["title"], "body": data.get("body", ""), "state": "open",
            "state_reason": None, "labels": list(dict.fromkeys(data.get("labels", []))),
            "assignees": list(data.get("assignees", [])), "comments": [],
            "html_url": f"https://github.example/{repo}/issues/{number}",
        }
        return web.json_response(self._gh_json(self.github[number]), status=201)

    async def _gh_list(self, request: web.Request) -> web.Response:
        self._gh_check(request)
        q = request.query
        wanted = [x for x in q.get("labels", "").split(",") if x]
        state = q.get("state", "open")
        hits = [i for i in self.github.values()
                if all(w in i["labels"] for w in wanted) and state in ("all", i["state"])]
        hits.sort(key=lambda i: i["number"], reverse=q.get("direction", "desc") == "desc")
        return web.json_response([self._gh_json(i) for i in hits[: int(q.get("per_page", 30))]])

    async def _gh_patch(self, request: web.Request) -> web.Response:
        issue = self._gh_issue(request)
        data = await request.json()
        for name in ("title", "body", "state", "state_reason"):
            if name in data:
                issue[name] = data[name]
        return web.json_response(self._gh_json(issue))

    async def _gh_comment(self, request: web.Request) -> web.Response:
        issue = self._gh_issue(request)
        issue["comments"].append((await request.json())["body"])
        return web.json_response({"id": len(issue["comments"])}, status=201)

    async def _gh_labels(self, request: web.Request) -> web.Response:
        issue = self._gh_issue(request)
        for label in (await request.json())["labels"]:
            if label not in issue["labels"]:
                issue["labels"].append(label)
        return web.json_response([{"name": n} for n in issue["labels"]])


@asynccontextmanager
async def fake_server(**kwargs: Any) -> AsyncIterator[FakeTicketServer]:
    server = FakeTicketServer(**kwargs)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def adapter(kind: str, server: FakeTicketServer, retry: RetryPolicy = FAST,
                  **options: Any) -> AsyncIterator[TicketSystem]:
    defaults: dict[str, dict[str, Any]] = {
        "generic": {"base_url": server.base_url, "token": TOKEN},
        "jira": {"base_url": server.base_url, "project": "OPS", "email": EMAIL, "api_token": TOKEN},
        "github": {"base_url": server.base_url, "repo": REPO, "token": TOKEN},
    }
    system = build_http_adapter(kind, {**defaults[kind], **options}, retry)
    try:
        yield system
    finally:
        await system.aclose()


CREATE_PATH = {"generic": "/internal/ticket/create", "jira": "/rest/api/2/issue",
               "github": f"/repos/{REPO}/issues"}


def tickets(server: FakeTicketServer, kind: str) -> list[dict[str, Any]]:
    return list({"generic": server.generic, "jira": server.jira, "github": server.github}[kind].values())


async def no_sleep(_delay: float) -> None:
    return None


# -- the whole life of a ticket, per system -------------------------------------------------------
async def test_generic_lifecycle() -> None:
    async with fake_server() as server, adapter("generic", server) as system:
        assert await system.find(CONTENT) is None
        ref = await system.create(CONTENT)
        assert ref == TicketRef("generic", "T-1", f"{server.base_url}/t/T-1")
        assert await system.find(CONTENT) == ref
        changed = replace(CONTENT, title="new title", body="new body")
        await system.update(ref, changed, occurrences=7, last_seen_ms=1_700_000_000_000)
        await system.comment(ref, "seen again")
        await system.close(ref, "fixed in 1.2.3")

        (ticket,) = server.generic.values()
        assert ticket["title"] == "new title" and ticket["body"] == "new body"
        assert ticket["occurrences"] == 7 and ticket["last_seen_ms"] == 1_700_000_000_000
        assert ticket["labels"] == ["plugwatch", "tenant t-1"]
        assert ticket["assignee"] == "alice" and ticket["owner"] == "team-images"
        assert ticket["severity"] == "critical" and ticket["fingerprint"] == "fp-abc"
        assert ticket["tenant_id"] == "t-1" and ticket["plugin_id"] == "resizer"
        assert ticket["report_url"] == CONTENT.report_url
        assert ticket["comments"] == ["seen again", "fixed in 1.2.3"]
        assert ticket["status"] == "closed"
        (create,) = server.seen("POST", "/internal/ticket/create")
        assert create.headers["idempotency-key"] == CONTENT.idempotency_key
        assert create.headers["authorization"] == f"Bearer {TOKEN}"


async def test_jira_lifecycle() -> None:
    async with fake_server() as server, adapter("jira", server, set_priority="true") as system:
        assert await system.find(CONTENT) is None
        ref = await system.create(CONTENT)
        assert ref == TicketRef("jira", "OPS-1", f"{server.base_url}/browse/OPS-1")
        assert await system.find(CONTENT) == ref
        changed = replace(CONTENT, title="new title", labels=("plugwatch", "hot"))
        await system.update(ref, changed, occurrences=3, last_seen_ms=1_700_000_000_000)
        await system.comment(ref, "seen again")
        await system.close(ref, "fixed in 1.2.3")

        issue = server.jira["OPS-1"]
        fields = issue["fields"]
        assert fields["project"] == {"key": "OPS"} and fields["issuetype"] == {"name": "Bug"}
        assert fields["summary"] == "new title"
        assert fields["description"] == (
            "## Debug report\n\nStack excerpt (masked)\n\nOccurrences: 3, last seen: 2023-11-14T22:13:20Z")
        assert fields["labels"] == ["plugwatch", "tenant-t-1", CONTENT.idempotency_key, "hot"]
        assert fields["assignee"] == {"name": "alice"}
        assert fields["priority"] == {"name": "Highest"}
        assert issue["comments"] == ["seen again", "fixed in 1.2.3"]
        assert issue["transitions"] == ["31"] and issue["status"] == "Done"
        (search, *_) = server.seen("GET", "/rest/api/2/search")
        assert search.query == {"jql": f'labels = "{CONTENT.idempotency_key}" ORDER BY created ASC',
                                "maxResults": "1", "fields": "key"}
        assert search.headers["authorization"].startswith("Basic ")


async def test_jira_bearer_account_id_and_cloud_search() -> None:
    async with fake_server(jira_cloud=True) as server, adapter(
        "jira", server, email=None, api_token=None, token=TOKEN, assignee_field="accountId"
    ) as system:
        ref = await system.create(CONTENT)
        assert await system.find(CONTENT) == ref
        assert await system.find(CONTENT) == ref
        assert server.jira["OPS-1"]["fields"]["assignee"] == {"accountId": "alice"}
        assert "priority" not in server.jira["OPS-1"]["fields"]
        # one 410 from the removed endpoint, then the Jira Cloud one
        assert len(server.seen("GET", "/rest/api/2/search")) == 1
        assert len(server.seen("GET", "/rest/api/2/search/jql")) == 2
        assert server.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


async def test_github_lifecycle() -> None:
    async with fake_server() as server, adapter("github", server) as system:
        assert await system.find(CONTENT) is None
        ref = await system.create(CONTENT)
        assert ref == TicketRef("github", "1", f"https://github.example/{REPO}/issues/1")
        assert await system.find(CONTENT) == ref
        changed = replace(CONTENT, title="new title", labels=("plugwatch", "hot"))
        await system.update(ref, changed, occurrences=3, last_seen_ms=1_700_000_000_000)
        await system.comment(ref, "seen again")
        await system.close(ref, "fixed in 1.2.3")

        issue = server.github[1]
        assert issue["title"] == "new title"
        assert issue["body"].endswith("\n\nOccurrences: 3, last seen: 2023-11-14T22:13:20Z")
        assert issue["labels"] == ["plugwatch", "tenant t-1", CONTENT.idempotency_key, "hot"]
        assert issue["assignees"] == ["alice"]
        assert issue["comments"] == ["seen again", "fixed in 1.2.3"]
        assert (issue["state"], issue["state_reason"]) == ("closed", "completed")
        listing = server.seen("GET", f"/repos/{REPO}/issues")[0]
        assert listing.query["labels"] == CONTENT.idempotency_key
        assert (listing.query["state"], listing.query["per_page"]) == ("all", "1")
        assert listing.headers["accept"] == "application/vnd.github+json"
        assert listing.headers["authorization"] == f"Bearer {TOKEN}"


async def test_github_finds_closed_issue_and_the_oldest_duplicate() -> None:
    async with fake_server() as server, adapter("github", server) as system:
        first = await system.create(CONTENT)
        await system.create(CONTENT)  # a duplicate made behind our back
        await system.close(first, "done")
        assert await system.find(CONTENT) == first


# -- retries --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["generic", "jira", "github"])
async def test_5xx_twice_then_ok_makes_one_ticket(kind: str) -> None:
    async with fake_server() as server, adapter(kind, server) as system:
        server.fail("POST", CREATE_PATH[kind], Fault(status=500), Fault(status=503))
        ref = await system.create(CONTENT)
        assert len(server.seen("POST", CREATE_PATH[kind])) == 3
        assert len(tickets(server, kind)) == 1
        assert await system.find(CONTENT) == ref


@pytest.mark.parametrize("kind", ["generic", "jira", "github"])
async def test_lost_answer_after_timeout_makes_one_ticket(kind: str) -> None:
    async with fake_server() as server, adapter(kind, server, STALLING) as system:
        server.fail("POST", CREATE_PATH[kind], Fault(stall_s=5.0))
        ref = await system.create(CONTENT)
        assert len(tickets(server, kind)) == 1
        assert await system.find(CONTENT) == ref
        creates = server.seen("POST", CREATE_PATH[kind])
        if kind == "generic":
            # the platform answers the retried create with the ticket the first one made
            assert len(creates) == 2
        else:
            # Jira and GitHub have no idempotency key: the retry looks the label up and finds it
            assert len(creates) == 1


async def test_stalled_lookup_is_retried() -> None:
    async with fake_server() as server, adapter("generic", server, STALLING) as system:
        ref = await system.create(CONTENT)
        server.fail("GET", "/internal/ticket/lookup", Fault(stall_s=5.0))
        assert await system.find(CONTENT) == ref
        assert len(server.seen("GET", "/internal/ticket/lookup")) == 2


@pytest.mark.parametrize("kind", ["generic", "jira", "github"])
async def test_exhausted_retries_raise_unavailable(kind: str) -> None:
    retry = RetryPolicy(attempts=3, sleep=no_sleep)
    async with fake_server() as server, adapter(kind, server, retry) as system:
        server.fail("POST", CREATE_PATH[kind], *[Fault(status=502)] * 3)
        with pytest.raises(TicketUnavailable) as caught:
            await system.create(CONTENT)
        assert len(server.seen("POST", CREATE_PATH[kind])) == 3
        assert tickets(server, kind) == []
        assert "502" in str(caught.value) and kind in str(caught.value)
        assert TOKEN not in str(caught.value)


async def test_connection_refused_raises_unavailable() -> None:
    async with fake_server() as server:
        base_url = server.base_url
    delays: list[float] = []

    async def record(delay: float) -> None:
        delays.append(delay)

    system = build_http_adapter("generic", {"base_url": base_url, "token": TOKEN},
                                RetryPolicy(attempts=4, sleep=record))
    try:
        with pytest.raises(TicketUnavailable) as caught:
            await system.find(CONTENT)
    finally:
        await system.aclose()
    assert len(delays) == 3
    assert "ConnectError" in str(caught.value) and TOKEN not in str(caught.value)


@pytest.mark.parametrize("kind", ["generic", "jira", "github"])
@pytest.mark.parametrize("status", [400, 401, 404])
async def test_4xx_is_rejected_without_retry(kind: str, status: int) -> None:
    async with fake_server() as server, adapter(kind, server) as system:
        server.fail("POST", CREATE_PATH[kind], Fault(status=status))
        with pytest.raises(TicketRejected) as caught:
            await system.create(CONTENT)
        assert caught.value.status == status
        message = str(caught.value)
        assert f"HTTP {status}" in message and kind in message
        assert f"POST {CREATE_PATH[kind]}" in message
        assert TOKEN not in message
        assert len(server.seen("POST", CREATE_PATH[kind])) == 1
        assert len(server.requests) == 1


@pytest.mark.parametrize("kind", ["generic", "jira", "github"])
async def test_credentials_echoed_by_the_server_are_not_repeated(kind: str) -> None:
    async with fake_server(echo_auth=True) as server:
        server_token = TOKEN
        options: dict[str, Any] = {"token": "wrong-" + server_token}
        if kind == "jira":
            options = {"api_token": "wrong-" + server_token}
        async with adapter(kind, server, **options) as system:
            with pytest.raises(TicketRejected) as caught:
                await system.find(CONTENT)
        assert caught.value.status == 401
        assert "wrong-" not in str(caught.value) and "***" in str(caught.value)
        assert "Bad credentials" in str(caught.value)
        assert len(server.requests) == 1


async def test_body_excerpt_is_short() -> None:
    async with fake_server() as server, adapter("github", server) as system:
        errors = [{"resource": "Issue", "code": "invalid", "field": f"f{i}"} for i in range(200)]
        server.fail("POST", CREATE_PATH["github"], Fault(status=422, body={"message": "Validation Failed",
                                                                           "errors": errors}))
        with pytest.raises(TicketRejected) as caught:
            await system.create(CONTENT)
        message = str(caught.value)
        assert caught.value.status == 422 and "Validation Failed" in message
        excerpt = message.split("HTTP 422: ", 1)[1]
        assert len(excerpt) <= 200


# -- backoff and jitter, through the adapters' retry helper ----------------------------------------
async def test_backoff_is_exponential_capped_and_fully_jittered() -> None:
    delays: list[float] = []
    draws = iter([1.0, 1.0, 1.0, 1.0, 0.5])

    async def record(delay: float) -> None:
        delays.append(delay)

    retry = RetryPolicy(attempts=6, first_delay_s=0.2, max_delay_s=1.0,
                        random=lambda: next(draws), sleep=record)
    async with fake_server() as server, adapter("generic", server, retry) as system:
        server.fail("POST", CREATE_PATH["generic"], *[Fault(status=500)] * 5)
        await system.create(CONTENT)
    # min(max_delay, first * 2**n) * r for n = 0..4
    assert delays == pytest.approx([0.2, 0.4, 0.8, 1.0, 0.5])
    assert len(server.seen("POST", CREATE_PATH["generic"])) == 6


async def test_rate_limit_is_retried_after_retry_after() -> None:
    delays: list[float] = []

    async def record(delay: float) -> None:
        delays.append(delay)

    retry = RetryPolicy(first_delay_s=0.2, max_delay_s=10.0, random=lambda: 0.0, sleep=record)
    async with fake_server() as server, adapter("github", server, retry) as system:
        server.fail("GET", f"/repos/{REPO}/issues", Fault(status=429, headers={"Retry-After": "3"}),
                    Fault(status=403, headers={"x-ratelimit-remaining": "0"}))
        assert await system.find(CONTENT) is None
    assert delays == [3.0, 0.0]


# -- Jira close ------------------------------------------------------------------------------------
async def test_jira_close_without_matching_transition_is_a_clear_error() -> None:
    async with fake_server() as server, adapter("jira", server, close_transition="Resolve") as system:
        ref = await system.create(CONTENT)
        with pytest.raises(TicketRejected) as caught:
            await system.close(ref, "fixed")
        message = str(caught.value)
        assert caught.value.status == 409
        assert "'Resolve'" in message and "'Done'" in message and "close_transition" in message
        assert server.jira["OPS-1"]["status"] == "To Do"
        assert server.jira["OPS-1"]["comments"] == []  # nothing half done


async def test_jira_close_is_case_insensitive_and_idempotent() -> None:
    async with fake_server() as server, adapter("jira", server, close_transition="done") as system:
        ref = await system.create(CONTENT)
        await system.close(ref, "fixed")
        await system.close(ref, "fixed")  # a retried close: Done is no longer offered
        assert server.jira["OPS-1"]["status"] == "Done"
        assert server.jira["OPS-1"]["comments"] == ["fixed"]


# -- configuration ---------------------------------------------------------------------------------
def test_build_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match="unknown HTTP ticket system 'servicenow'"):
        build_http_adapter("servicenow", {})
    with pytest.raises(ValueError, match="tickets.options.base_url"):
        build_http_adapter("generic", {})
    with pytest.raises(ValueError, match="tickets.options.project"):
        build_http_adapter("jira", {"base_url": "https://jira.example", "token": "x"})
    with pytest.raises(ValueError, match="email \\+ api_token"):
        build_http_adapter("jira", {"base_url": "https://jira.example", "project": "OPS", "email": "a@b"})
    with pytest.raises(ValueError, match="email \\+ api_token"):
        build_http_adapter("jira", {"base_url": "https://jira.example", "project": "OPS"})
    with pytest.raises(ValueError, match="tickets.options.repo, tickets.options.token"):
        build_http_adapter("github", {})
    with pytest.raises(ValueError, match="owner/name"):
        build_http_adapter("github", {"repo": "plugins", "token": "x"})
    with pytest.raises(ValueError, match="does not know option"):
        build_http_adapter("github", {"repo": "a/b", "token": "x", "projekt": "OPS"})


async def test_build_accepts_secret_values() -> None:
    class Secret:
        def get_secret_value(self) -> str:
            return TOKEN

    systems = [
        build_http_adapter("github", {"repo": "a/b", "token": Secret()}),
        build_http_adapter("generic", {"base_url": "http://x/", "token": None}),
        build_http_adapter("jira", {"base_url": "http://x", "project": "P", "token": Secret(),
                                    "set_priority": "no"}),
    ]
    for system in systems:
        await system.aclose()
    assert [type(s) for s in systems] == [GitHubTickets, GenericHttpTickets, JiraTickets]
