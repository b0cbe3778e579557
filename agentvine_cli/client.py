"""HTTP to the AgentVine REST API, with failures sorted the way the outbox needs.

``ServerUnavailable``: nothing was decided, try again later (connection
refused, DNS failure, timeout, 502/503/504, 429, other 5xx).
``ApiError``: the server refused the request for good (4xx); its message
is kept in one line.
"""

import os

import requests

API_PREFIX = "/api/v1/"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Gateways answer these while the application behind them is down or
# restarting; 429 is the server's throttle. None of them applied anything.
UNAVAILABLE_STATUSES = (429, 502, 503, 504)
CONNECT_TIMEOUT = float(os.environ.get("AGENTVINE_CONNECT_TIMEOUT", "3"))
READ_TIMEOUT = float(os.environ.get("AGENTVINE_READ_TIMEOUT", "30"))

ERR_UNREACHABLE = "server {server} is offline ({reason})"
ERR_NOT_JSON = "server answered HTTP {status} with a body that is not JSON"


class ServerUnavailable(Exception):
    def __init__(self, server, reason, *, status=None):
        super().__init__(ERR_UNREACHABLE.format(server=server, reason=reason))
        self.reason = reason
        self.status = status


class ApiError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def error_message(body, status):
    """DRF's error bodies ({"detail": …} or {"field": ["msg", …]}) in one line."""
    if isinstance(body, dict):
        if "detail" in body and len(body) <= 2:
            return str(body["detail"])
        parts = []
        for field, messages in body.items():
            if field == "code":
                continue
            if isinstance(messages, list):
                messages = "; ".join(str(m) for m in messages)
            parts.append(f"{field}: {messages}" if field != "non_field_errors" else str(messages))
        if parts:
            return ", ".join(parts)
    if isinstance(body, list) and body:
        return "; ".join(str(item) for item in body)
    return f"HTTP {status}"


def _one_line(text):
    return " ".join(str(text).split())


class Client:
    def __init__(self, server, token, *, timeout=None):
        self.server = server.rstrip("/")
        self.token = token
        self.timeout = timeout or (CONNECT_TIMEOUT, READ_TIMEOUT)
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Token {token}"
        self.http.headers["Accept"] = "application/json"

    def clone(self):
        """The same credentials on a new HTTP session, for another thread."""
        return Client(self.server, self.token, timeout=self.timeout)

    def url(self, path):
        return self.server + API_PREFIX + path.lstrip("/")

    def get_text(self, path, *, accept, **params):
        """The body of a 2xx answer to a GET as text (a diff): the same
        failures as :meth:`request`, an error body read as JSON. ``accept``
        is the media type wanted; DRF also reads it from ``?format=``."""
        params = {k: v for k, v in params.items() if v is not None}
        response = self._send("GET", path, params=params, headers={"Accept": accept})
        if response.status_code >= 400:
            raise self._error(response)
        response.encoding = response.encoding or "utf-8"
        return response.text

    def request(self, method, path, *, raw_body=None, params=None, idempotency_key=None):
        """The decoded JSON answer of a 2xx; raises ServerUnavailable or ApiError.

        ``raw_body`` is JSON text sent as is: a replay must be byte-identical
        for the server to recognise it under the same Idempotency-Key.
        """
        headers = {IDEMPOTENCY_HEADER: idempotency_key} if idempotency_key else {}
        if raw_body is not None:
            headers["Content-Type"] = "application/json"
        data = None if raw_body is None else raw_body.encode()
        response = self._send(method, path, data=data, params=params, headers=headers)
        status = response.status_code
        if status >= 400:
            raise self._error(response)
        if status == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ServerUnavailable(self.server, ERR_NOT_JSON.format(status=status), status=status) from None

    def _send(self, method, path, *, data=None, params=None, headers=None):
        """The response to one request; a server that cannot answer (no
        connection, a timeout, a 5xx or 502-504) is ServerUnavailable."""
        try:
            response = self.http.request(
                method, self.url(path), data=data, params=params, headers=headers, timeout=self.timeout
            )
        except requests.Timeout:
            raise ServerUnavailable(self.server, "timed out") from None
        except requests.ConnectionError as exc:
            raise ServerUnavailable(self.server, _connection_reason(exc)) from None
        status = response.status_code
        if status in UNAVAILABLE_STATUSES or status >= 500:
            raise ServerUnavailable(self.server, f"HTTP {status}", status=status)
        return response

    @staticmethod
    def _error(response):
        """The ApiError of a 4xx answer, its message read from its JSON body."""
        status = response.status_code
        if not response.content:
            return ApiError(status, _one_line(error_message(None, status)))
        try:
            body = response.json()
        except ValueError:
            return ApiError(status, ERR_NOT_JSON.format(status=status))
        return ApiError(status, _one_line(error_message(body, status)))

    def get(self, path, **params):
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def get_all(self, path, *, limit=None, **params):
        """Every item of a paginated list (or the first ``limit`` of them)."""
        items, offset, page = [], 0, 200
        while True:
            data = self.get(path, limit=page, offset=offset, **params)
            results = data["results"] if isinstance(data, dict) and "results" in data else data
            items.extend(results)
            offset += len(results)
            if not isinstance(data, dict) or not data.get("next") or not results:
                break
            if limit is not None and len(items) >= limit:
                break
        return items[:limit] if limit is not None else items

    def close(self):
        self.http.close()


def _connection_reason(exc):
    text = str(exc)
    if "Name or service not known" in text or "nodename nor servname" in text or "NameResolution" in text:
        return "cannot resolve host"
    if "Connection refused" in text or "ConnectionRefused" in text:
        return "connection refused"
    return "cannot connect"
