"""HTTP ticket adapters: the platform's generic ticket API, Jira (REST v2) and GitHub issues.

A ticket is found by its idempotency key (a label on Jira and GitHub, a lookup on the generic API), so
the caller finds before it creates and a create retried by its outbox never opens a second ticket.
Timeouts, connection errors, 5xx and rate limits are retried with exponential backoff and full jitter,
then surface as ``TicketUnavailable``; any other 4xx surfaces at once as ``TicketRejected``.
Credentials never appear in logs or exception messages.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import httpx

from plugwatch.tickets.model import TicketContent, TicketRef

log = logging.getLogger(__name__)

T = TypeVar("T")

EXCERPT_CHARS = 200
JIRA_SUMMARY_LIMIT = 255
JIRA_TEXT_LIMIT = 32_767
GITHUB_TITLE_LIMIT = 256
GITHUB_BODY_LIMIT = 65_536
GITHUB_LABEL_LIMIT = 50
JIRA_PRIORITIES = {"critical": "Highest", "high": "High", "medium": "Medium", "low": "Low"}
JIRA_CLOUD_SEARCH_PATH = "/rest/api/2/search/jql"
USER_AGENT = "plugwatch-tickets"


class TicketError(Exception):
    """A ticket system call failed."""


class TicketUnavailable(TicketError):
    """The ticket system timed out, was unreachable or kept failing: keep the work and try later."""


class TicketRejected(TicketError):
    """The ticket system refused the request; sending it again will not help."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class TicketSystem(Protocol):
    name: str

    async def find(self, content: TicketContent) -> TicketRef | None: ...

    async def create(self, content: TicketContent) -> TicketRef: ...

    async def update(
        self, ref: TicketRef, content: TicketContent, *, occurrences: int, last_seen_ms: int
    ) -> None: ...

    async def comment(self, ref: TicketRef, text: str) -> None: ...

    async def close(self, ref: TicketRef, comment: str) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a request is tried; ``random`` and ``sleep`` are swapped in tests."""

    attempts: int = 5
    first_delay_s: float = 0.2
    max_delay_s: float = 10.0
    timeout_s: float = 10.0
    random: Callable[[], float] = field(default=random.random, repr=False, compare=False)
    sleep: Callable[[float], Awaitable[Any]] = field(default=asyncio.sleep, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be at least 1, got {self.attempts}")

    def delay(self, retry: int) -> float:
        """Full jitter before retry number ``retry`` (from 0): uniform(0, min(max, first * 2**retry))."""
        return self.random() * min(self.max_delay_s, self.first_delay_s * 2 ** min(retry, 60))


class _Transient(Exception):
    """One attempt failed in a way worth another try."""

    def __init__(self, cause: str, retry_after: float | None = None) -> None:
        super().__init__(cause)
        self.cause = cause
        self.retry_after = retry_after


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: the jittered backoff will do


def _is_transient(response: httpx.Response) -> bool:
    status = response.status_code
    if status >= 500 or status in (408, 429):
        return True
    # GitHub signals rate limits as 403 with these headers.
    return status == 403 and (
        response.headers.get("x-ratelimit-remaining") == "0" or "retry-after" in response.headers
    )


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_line(text: str, limit: int) -> str:
    return _clip(" ".join(text.split()), limit)


def _occurrence_line(occurrences: int, last_seen_ms: int) -> str:
    seen = datetime.fromtimestamp(last_seen_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"Occurrences: {occurrences}, last seen: {seen}"


def _with_occurrences(body: str, occurrences: int, last_seen_ms: int, limit: int) -> str:
    line = _occurrence_line(occurrences, last_seen_ms)
    return _clip(body, limit - len(line) - 2) + "\n\n" + line


_Send = Callable[..., Awaitable[httpx.Response]]


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(item for item in items if item))


class _HttpTickets:
    """Shared HTTP plumbing: one client, retries, error mapping and redaction."""

    name = "http"

    def __init__(
        self,
        *,
        base_url: str,
        retry: RetryPolicy,
        transport: httpx.AsyncBaseTransport | None,
        headers: dict[str, str] | None = None,
        auth: httpx.Auth | None = None,
        secrets: Iterable[str | None] = (),
    ) -> None:
        self._retry = retry
        self._secrets = tuple(s for s in secrets if s)
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers={"User-Agent": USER_AGENT, **(headers or {})},
            auth=auth,
            timeout=retry.timeout_s,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        missing_ok: bool = False,
    ) -> httpx.Response:
        """One logical request, retried on transient failures; a 404 is returned when ``missing_ok``."""
        return await self._retrying(
            method,
            path,
            lambda _n: self._send(
                method, path, json=json, params=params, headers=headers, missing_ok=missing_ok
            ),
        )

    async def _retrying(self, method: str, path: str, attempt: Callable[[int], Awaitable[T]]) -> T:
        """Run ``attempt(n)`` until it stops raising ``_Transient`` or the attempts are spent."""
        last: _Transient | None = None
        for n in range(self._retry.attempts):
            if last is not None:
                delay = self._retry.delay(n - 1)
                if last.retry_after is not None:
                    delay = min(max(delay, last.retry_after), self._retry.max_delay_s)
                log.warning(
                    "%s %s %s failed (%s); try %d of %d in %.2f s",
                    self.name, method, path, last.cause, n + 1, self._retry.attempts, delay,
                )
                await self._retry.sleep(delay)
            try:
                return await attempt(n)
            except _Transient as exc:
                last = exc
        assert last is not None
        raise TicketUnavailable(
            f"{self.name} {method} {path}: unavailable after {self._retry.attempts} attempt(s); "
            f"last error: {last.cause}"
        ) from last

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        missing_ok: bool = False,
    ) -> httpx.Response:
        """One try: transient failures raise ``_Transient``, refusals raise ``TicketRejected``."""
        try:
            response = await self._client.request(method, path, json=json, params=params, headers=headers)
        except httpx.TransportError as exc:  # timeouts and connection errors alike
            detail = self._redact(_one_line(str(exc), EXCERPT_CHARS))
            raise _Transient(f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__) from exc
        status = response.status_code
        if _is_transient(response):
            raise _Transient(f"HTTP {status}: {self._excerpt(response)}", _retry_after(response))
        if status == 404 and missing_ok:
            return response
        if status >= 300:
            raise TicketRejected(
                f"{self.name} {method} {path} was rejected with HTTP {status}: {self._excerpt(response)}",
                status=status,
            )
        return response

    def _parse(self, method: str, path: str, response: httpx.Response, pick: Callable[[Any], T]) -> T:
        """``pick`` applied to the JSON answer; an answer of the wrong shape is a ``TicketUnavailable``."""
        try:
            return pick(response.json())
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise TicketUnavailable(
                f"{self.name} {method} {path}: unexpected answer (HTTP {response.status_code}): "
                f"{self._excerpt(response)}"
            ) from exc

    def _excerpt(self, response: httpx.Response) -> str:
        return self._redact(_one_line(response.text, EXCERPT_CHARS)) or "(empty body)"

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


class GenericHttpTickets(_HttpTickets):
    """The platform's generic ticket API (docs/tickets.md); it deduplicates creates by idempotency key."""

    name = "generic"

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        retry: RetryPolicy = RetryPolicy(),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url=base_url,
            retry=retry,
            transport=transport,
            headers={"Authorization": f"Bearer {token}"} if token else None,
            secrets=(token,),
        )

    def _ref(self, data: Any) -> TicketRef:
        return TicketRef(self.name, str(data["id"]), data.get("url"))

    async def find(self, content: TicketContent) -> TicketRef | None:
        path = "/internal/ticket/lookup"
        params = {"idempotency_key": content.idempotency_key}
        response = await self._request("GET", path, params=params, missing_ok=True)
        if response.status_code == 404:
            return None
        return self._parse("GET", path, response, self._ref)

    async def create(self, content: TicketContent) -> TicketRef:
        path = "/internal/ticket/create"
        payload = {
            "idempotency_key": content.idempotency_key,
            "title": content.title,
            "body": content.body,
            "tenant_id": content.tenant_id,
            "plugin_id": content.plugin_id,
            "owner": content.owner,
            "assignee": content.assignee,
            "severity": content.severity,
            "labels": list(content.labels),
            "report_url": content.report_url,
            "fingerprint": content.fingerprint,
        }
        headers = {"Idempotency-Key": content.idempotency_key}
        response = await self._request("POST", path, json=payload, headers=headers)
        return self._parse("POST", path, response, self._ref)

    async def update(
        self, ref: TicketRef, content: TicketContent, *, occurrences: int, last_seen_ms: int
    ) -> None:
        await self._request("POST", "/internal/ticket/update", json={
            "id": ref.external_id,
            "title": content.title,
            "body": content.body,
            "labels": list(content.labels),
            "occurrences": occurrences,
            "last_seen_ms": last_seen_ms,
        })

    async def comment(self, ref: TicketRef, text: str) -> None:
        await self._request("POST", "/internal/ticket/comment", json={"id": ref.external_id, "body": text})

    async def close(self, ref: TicketRef, comment: str) -> None:
        payload = {"id": ref.external_id, "comment": comment}
        await self._request("POST", "/internal/ticket/close", json=payload)


class JiraTickets(_HttpTickets):
    """Jira issues over REST v2; the idempotency key is an issue label."""

    name = "jira"

    def __init__(
        self,
        base_url: str,
        project: str,
        *,
        email: str | None = None,
        api_token: str | None = None,
        token: str | None = None,
        issue_type: str = "Bug",
        close_transition: str = "Done",
        set_priority: bool = False,
        assignee_field: str = "name",
        search_path: str = "/rest/api/2/search",
        retry: RetryPolicy = RetryPolicy(),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if assignee_field not in ("name", "accountId"):
            raise ValueError(f"jira assignee_field must be 'name' or 'accountId', got {assignee_field!r}")
        auth: httpx.Auth | None = None
        headers: dict[str, str] = {"Accept": "application/json"}
        secrets: list[str | None] = [api_token, token]
        if email and api_token:
            auth = httpx.BasicAuth(email, api_token)
            secrets.append(base64.b64encode(f"{email}:{api_token}".encode()).decode())
        elif token:
            headers["Authorization"] = f"Bearer {token}"
        else:
            raise ValueError("jira needs email + api_token (Jira Cloud) or token (a personal access token)")
        super().__init__(
            base_url=base_url, retry=retry, transport=transport, headers=headers, auth=auth, secrets=secrets
        )
        self._browse = base_url.rstrip("/") + "/browse/"
        self._project = project
        self._issue_type = issue_type
        self._close_transition = close_transition
        self._set_priority = set_priority
        self._assignee_field = assignee_field
        self._search_path = search_path

    def _ref(self, key: str) -> TicketRef:
        return TicketRef(self.name, key, self._browse + key)

    @staticmethod
    def _labels(content: TicketContent) -> list[str]:
        # Jira labels cannot contain spaces; the idempotency key is the label find() searches for.
        labels = (*content.labels, content.idempotency_key)
        return _unique("-".join(label.split())[:255] for label in labels)

    async def find(self, content: TicketContent) -> TicketRef | None:
        return await self._lookup(content, self._request)

    async def _lookup(self, content: TicketContent, send: _Send) -> TicketRef | None:
        key = content.idempotency_key.replace("\\", "\\\\").replace('"', '\\"')
        params = {"jql": f'labels = "{key}" ORDER BY created ASC', "maxResults": 1, "fields": "key"}
        try:
            response = await send("GET", self._search_path, params=params)
        except TicketRejected as exc:
            # Jira Cloud removed /rest/api/2/search (410 Gone) in favour of /search/jql.
            if exc.status != 410 or self._search_path == JIRA_CLOUD_SEARCH_PATH:
                raise
            log.warning("jira %s is gone; using %s from now on", self._search_path, JIRA_CLOUD_SEARCH_PATH)
            self._search_path = JIRA_CLOUD_SEARCH_PATH
            response = await send("GET", self._search_path, params=params)
        keys = self._parse(
            "GET", self._search_path, response, lambda data: [str(i["key"]) for i in data["issues"]]
        )
        return self._ref(keys[0]) if keys else None

    async def create(self, content: TicketContent) -> TicketRef:
        path = "/rest/api/2/issue"
        fields: dict[str, Any] = {
            "project": {"key": self._project},
            "summary": _one_line(content.title, JIRA_SUMMARY_LIMIT),
            "description": _clip(content.body, JIRA_TEXT_LIMIT),
            "issuetype": {"name": self._issue_type},
            "labels": self._labels(content),
        }
        if self._set_priority and (priority := JIRA_PRIORITIES.get(content.severity.lower())):
            fields["priority"] = {"name": priority}
        if content.assignee:
            fields["assignee"] = {self._assignee_field: content.assignee}

        async def attempt(n: int) -> TicketRef:
            # A failed try may still have created the issue (lost answer, 5xx after commit): look first.
            if n and (existing := await self._lookup(content, self._send)) is not None:
                return existing
            response = await self._send("POST", path, json={"fields": fields})
            return self._parse("POST", path, response, lambda data: self._ref(str(data["key"])))

        return await self._retrying("POST", path, attempt)

    async def update(
        self, ref: TicketRef, content: TicketContent, *, occurrences: int, last_seen_ms: int
    ) -> None:
        # Labels are added, not replaced, so labels set by people in Jira survive the refresh.
        await self._request("PUT", f"/rest/api/2/issue/{ref.external_id}", json={
            "fields": {
                "summary": _one_line(content.title, JIRA_SUMMARY_LIMIT),
                "description": _with_occurrences(content.body, occurrences, last_seen_ms, JIRA_TEXT_LIMIT),
            },
            "update": {"labels": [{"add": label} for label in self._labels(content)]},
        })

    async def comment(self, ref: TicketRef, text: str) -> None:
        path = f"/rest/api/2/issue/{ref.external_id}/comment"
        await self._request("POST", path, json={"body": _clip(text, JIRA_TEXT_LIMIT)})

    async def close(self, ref: TicketRef, comment: str) -> None:
        path = f"/rest/api/2/issue/{ref.external_id}/transitions"
        response = await self._request("GET", path)
        transitions = self._parse("GET", path, response, lambda data: list(data["transitions"]))
        wanted = self._close_transition.casefold()
        chosen = next((t for t in transitions if str(t.get("name", "")).casefold() == wanted), None)
        if chosen is None:
            if await self._is_done(ref):
                return  # closed already, e.g. by an earlier try whose answer was lost
            names = ", ".join(repr(t.get("name")) for t in transitions) or "none"
            raise TicketRejected(
                f"jira GET {path}: issue {ref.external_id} offers no transition named "
                f"{self._close_transition!r} (available: {names}); "
                "set tickets.options.close_transition to one of them",
                status=409,
            )
        await self.comment(ref, comment)
        await self._request("POST", path, json={"transition": {"id": str(chosen["id"])}})

    async def _is_done(self, ref: TicketRef) -> bool:
        path = f"/rest/api/2/issue/{ref.external_id}"
        response = await self._request("GET", path, params={"fields": "status"})
        category = self._parse(
            "GET", path, response, lambda data: data["fields"]["status"]["statusCategory"]["key"]
        )
        return category == "done"


class GitHubTickets(_HttpTickets):
    """GitHub issues; the idempotency key is an issue label."""

    name = "github"

    def __init__(
        self,
        repo: str,
        token: str,
        *,
        base_url: str = "https://api.github.com",
        retry: RetryPolicy = RetryPolicy(),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        owner, _, name = repo.partition("/")
        if not owner or not name or "/" in name:
            raise ValueError(f"github repo must look like 'owner/name', got {repo!r}")
        super().__init__(
            base_url=base_url,
            retry=retry,
            transport=transport,
            headers={
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "Authorization": f"Bearer {token}",
            },
            secrets=(token,),
        )
        self._issues = f"/repos/{repo}/issues"

    @staticmethod
    def _ref(data: Any) -> TicketRef:
        return TicketRef("github", str(data["number"]), data.get("html_url"))

    @staticmethod
    def _labels(content: TicketContent) -> list[str]:
        return _unique(label[:GITHUB_LABEL_LIMIT] for label in (*content.labels, content.idempotency_key))

    async def find(self, content: TicketContent) -> TicketRef | None:
        return await self._lookup(content, self._request)

    async def _lookup(self, content: TicketContent, send: _Send) -> TicketRef | None:
        # The issue list, not the search API: search is eventually consistent.
        params = {
            "labels": content.idempotency_key,
            "state": "all",
            "per_page": 1,
            "sort": "created",
            "direction": "asc",
        }
        response = await send("GET", self._issues, params=params)
        refs = self._parse("GET", self._issues, response, lambda data: [self._ref(i) for i in data[:1]])
        return refs[0] if refs else None

    async def create(self, content: TicketContent) -> TicketRef:
        payload: dict[str, Any] = {
            "title": _one_line(content.title, GITHUB_TITLE_LIMIT),
            "body": _clip(content.body, GITHUB_BODY_LIMIT),
            "labels": self._labels(content),
        }
        if content.assignee:
            payload["assignees"] = [content.assignee]

        async def attempt(n: int) -> TicketRef:
            # A failed try may still have created the issue (lost answer, 5xx after commit): look first.
            if n and (existing := await self._lookup(content, self._send)) is not None:
                return existing
            response = await self._send("POST", self._issues, json=payload)
            return self._parse("POST", self._issues, response, self._ref)

        return await self._retrying("POST", self._issues, attempt)

    async def update(
        self, ref: TicketRef, content: TicketContent, *, occurrences: int, last_seen_ms: int
    ) -> None:
        path = f"{self._issues}/{ref.external_id}"
        await self._request("PATCH", path, json={
            "title": _one_line(content.title, GITHUB_TITLE_LIMIT),
            "body": _with_occurrences(content.body, occurrences, last_seen_ms, GITHUB_BODY_LIMIT),
        })
        # Added, not replaced, so labels set by people on GitHub survive the refresh.
        await self._request("POST", f"{path}/labels", json={"labels": self._labels(content)})

    async def comment(self, ref: TicketRef, text: str) -> None:
        path = f"{self._issues}/{ref.external_id}/comments"
        await self._request("POST", path, json={"body": _clip(text, GITHUB_BODY_LIMIT)})

    async def close(self, ref: TicketRef, comment: str) -> None:
        await self.comment(ref, comment)
        path = f"{self._issues}/{ref.external_id}"
        await self._request("PATCH", path, json={"state": "closed", "state_reason": "completed"})


_OPTIONS: dict[str, tuple[set[str], set[str]]] = {  # kind -> (required, optional)
    "generic": ({"base_url"}, {"token"}),
    "jira": (
        {"base_url", "project"},
        {"email", "api_token", "token", "issue_type", "close_transition", "set_priority",
         "assignee_field", "search_path"},
    ),
    "github": ({"repo", "token"}, {"base_url"}),
}


def _plain(value: Any) -> Any:
    """Secrets arrive as pydantic ``SecretStr``; the adapters need the text."""
    reveal = getattr(value, "get_secret_value", None)
    return reveal() if callable(reveal) else value


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"tickets.options.{name} must be true or false, got {value!r}")


def build_http_adapter(
    kind: str,
    options: dict[str, Any],
    retry: RetryPolicy = RetryPolicy(),
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> TicketSystem:
    """The adapter for ``tickets.system`` = ``kind`` configured from ``tickets.options``."""
    if kind not in _OPTIONS:
        raise ValueError(
            f"unknown HTTP ticket system {kind!r}: tickets.system must be one of "
            f"{', '.join(sorted(_OPTIONS))} (or 'local', which needs no adapter)"
        )
    required, optional = _OPTIONS[kind]
    given = {name: _plain(value) for name, value in options.items() if _plain(value) not in (None, "")}
    missing = sorted(required - given.keys())
    if missing:
        raise ValueError(
            f"tickets.system={kind} needs tickets.options.{', tickets.options.'.join(missing)}"
        )
    unknown = sorted(given.keys() - required - optional)
    if unknown:
        raise ValueError(
            f"tickets.system={kind} does not know option(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(required | optional))}"
        )
    base_url = given.get("base_url")
    if base_url is not None:
        base_url = str(base_url).rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"tickets.options.base_url must start with http(s)://, got {base_url!r}")
    if kind == "generic":
        return GenericHttpTickets(base_url, token=given.get("token"), retry=retry, transport=transport)
    if kind == "jira":
        if "set_priority" in given:
            given["set_priority"] = _flag("set_priority", given["set_priority"])
        basic = "email" in given or "api_token" in given
        if basic and ("token" in given or not ("email" in given and "api_token" in given)):
            raise ValueError(
                "tickets.system=jira needs either email + api_token (Jira Cloud) or token, not a mix"
            )
        extra = {name: given[name] for name in optional if name in given}
        return JiraTickets(base_url, str(given["project"]), retry=retry, transport=transport, **extra)
    return GitHubTickets(
        str(given["repo"]),
        str(given["token"]),
        base_url=base_url or "https://api.github.com",
        retry=retry,
        transport=transport,
    )
