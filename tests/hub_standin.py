"""A local stand-in for the Hugging Face Hub API: just enough for create_repo + upload_folder.

The one boundary the hub tests replace (the real Hub is unreachable from tests). It implements the
routes huggingface_hub's `HfApi` calls, with the Hub's JSON shapes and error conventions, checks what
crosses it (bearer token, payload formats, repo and branch existence), stores the committed files per
repo and branch, and records every request. Every file is answered "regular" upload mode, so files
travel base64-inlined in the NDJSON commit (no LFS / Xet storage needed).

    POST /api/repos/create                                   create_repo (409 if it exists)
    POST /api/validate-yaml                                  README.md front matter check
    GET  /api/{type}s/{namespace}/{name}[/revision/{rev}]    repo_info (sha of a branch)
    POST /api/{type}s/{namespace}/{name}/preupload/{rev}     upload modes + remote oids
    POST /api/{type}s/{namespace}/{name}/commit/{rev}        NDJSON commit
    POST /api/{type}s/{namespace}/{name}/branch/{branch}     create_branch (409 if it exists)

Faults for the retry tests: `hub.faults["commit"] = [500]` answers the next commit request with a
500 (then behaves normally); "drop" closes the connection without an answer. `hub.forbidden_namespaces`
answers 403 to repo creation there.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml


@dataclass
class RecordedRequest:
    method: str
    path: str  # URL path and query, as sent
    route: str  # create, validate-yaml, repo-info, preupload, commit, branch, unknown
    headers: dict[str, str]  # names lowercased
    body: bytes
    status: int = 0  # what the stand-in answered (0: connection dropped)


@dataclass
class StandInRepo:
    repo_type: str
    repo_id: str
    private: bool
    # branch -> path -> bytes; commits: (branch, summary, oid)
    branches: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {}})
    heads: dict[str, str] = field(default_factory=lambda: {"main": "0" * 40})
    commits: list[tuple[str, str, str]] = field(default_factory=list)


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a file (what the Hub reports as a regular file's oid)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


_REPO_ROUTE = re.compile(
    r"^/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"
    r"(?:/(?P<action>preupload|commit|branch|revision)/(?P<revision>[^?]+))?$"
)


class HubStandIn:
    """`with HubStandIn(token) as hub:` serves on `hub.endpoint` from a background thread."""

    def __init__(self, token: str):
        self.token = token
        self.requests: list[RecordedRequest] = []
        self.repos: dict[tuple[str, str], StandInRepo] = {}
        self.faults: dict[str, list] = {}
        self.forbidden_namespaces: set[str] = set()
        self._lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep the test output quiet
                pass

            def do_GET(self):
                stand_in._handle(self)

            def do_POST(self):
                stand_in._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="hub-stand-in", daemon=True
        )

    def __enter__(self) -> "HubStandIn":
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._server.shutdown()
        self._server.server_close()

    # --- views for the assertions ---

    def repo(self, repo_type: str, repo_id: str) -> StandInRepo:
        return self.repos[(repo_type, repo_id)]

    def requests_to(self, route: str) -> list[RecordedRequest]:
        return [request for request in self.requests if request.route == route]

    # --- request handling ---

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        path = urlsplit(handler.path).path
        route = self._route_name(handler.command, path)
        headers = {name.lower(): value for name, value in handler.headers.items()}
        record = RecordedRequest(handler.command, handler.path, route, headers, body)
        with self._lock:
            self.requests.append(record)
            fault = self.faults.get(route, []).pop(0) if self.faults.get(route) else None
        if fault == "drop":
            handler.close_connection = True  # no answer at all: the client sees the connection close
            return
        if fault is not None:
            status, payload, headers = fault, {"error": f"stand-in fault {fault}"}, {}
        elif handler.headers.get("Authorization") != f"Bearer {self.token}":
            status, payload, headers = 401, {"error": "Invalid credentials in Authorization header"}, {}
        else:
            with self._lock:
                status, payload, headers = self._answer(handler.command, path, route, body)
        record.status = status
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    @staticmethod
    def _route_name(method: str, path: str) -> str:
        if method == "POST" and path == "/api/repos/create":
            return "create"
        if method == "POST" and path == "/api/validate-yaml":
            return "validate-yaml"
        match = _REPO_ROUTE.match(path)
        if match is None:
            return "unknown"
        action = match.group("action")
        if method == "GET" and action in (None, "revision"):
            return "repo-info"
        if method == "POST" and action in ("preupload", "commit", "branch"):
            return action
        return "unknown"

    def _answer(self, method: str, path: str, route: str, body: bytes):
        if route == "create":
            return self._create(json.loads(body))
        if route == "validate-yaml":
            return self._validate_yaml(json.loads(body))
        if route == "unknown":
            return 501, {"error": f"the stand-in does not implement {method} {path}"}, {}
        match = _REPO_ROUTE.match(path)
        repo_type = match.group("type")[:-1]
        repo = self.repos.get((repo_type, match.group("repo")))
        if repo is None:
            return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
        revision = unquote(match.group("revision") or "main")
        if route == "branch":
            if revision in repo.branches:
                return 409, {"error": f"Reference already exists: refs/heads/{revision}"}, {}
            repo.branches[revision] = dict(repo.branches["main"])
            repo.heads[revision] = repo.heads["main"]
            return 200, {}, {}
        if revision not in repo.branches:
            return 404, {"error": f"Invalid rev id: {revision}"}, {"X-Error-Code": "RevisionNotFound"}
        if route == "repo-info":
            return 200, {"id": repo.repo_id, "sha": repo.heads[revision], "private": repo.private}, {}
        if route == "preupload":
            return self._preupload(repo, revision, json.loads(body))
        return self._commit(repo, revision, body)

    def _create(self, payload):
        namespace, name, repo_type = payload.get("organization"), payload["name"], payload.get("type") or "model"
        if namespace in self.forbidden_namespaces:
            message = f"You don't have the rights to create a {repo_type} under the namespace {namespace!r}"
            return 403, {"error": message}, {}
        repo_id = f"{namespace}/{name}" if namespace else f"stand-in-user/{name}"
        url = f"{self.endpoint}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"
        if (repo_type, repo_id) in self.repos:
            return 409, {"error": "You already created this repo", "url": url}, {}
        private = payload.get("visibility") == "private" or payload.get("private") is True
        self.repos[(repo_type, repo_id)] = StandInRepo(repo_type, repo_id, private)
        return 200, {"url": url}, {}

    @staticmethod
    def _validate_yaml(payload):
        content = payload.get("content", "")
        match = re.match(r"^---\n(.*?)\n---\n", content, re.DOTALL)
        if match is None:
            return 400, {"errors": [{"message": "README.md has no YAML front matter"}]}, {}
        try:
            metadata = yaml.safe_load(match.group(1))
        except yaml.YAMLError as error:
            return 400, {"errors": [{"message": f"invalid YAML: {error}"}]}, {}
        if not isinstance(metadata, dict):
            return 400, {"errors": [{"message": "YAML front matter is not a mapping"}]}, {}
        return 200, {"errors": [], "warnings": []}, {}

    @staticmethod
    def _preupload(repo, revision, payload):
        stored = repo.branches[revision]
        files = []
        for item in payload["files"]:
            sample = base64.b64decode(item["sample"])
            if len(sample) > 512 or not isinstance(item["size"], int):
                return 400, {"error": f"bad preupload entry for {item['path']}"}, {}
            content = stored.get(item["path"])
            files.append(
                {
                    "path": item["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_sha1(content) if content is not None else None,
                }
            )
        return 200, {"files": files}, {}

    def _commit(self, repo, revision, body):
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            return 400, {"error": "the commit payload must start with a header line"}, {}
        header = lines[0]["value"]
        added = {}
        for line in lines[1:]:
            if line["key"] != "file":
                return 400, {"error": f"the stand-in only accepts regular files, got {line['key']}"}, {}
            value = line["value"]
            if value.get("encoding") != "base64":
                return 400, {"error": f"unexpected encoding {value.get('encoding')!r}"}, {}
            added[value["path"]] = base64.b64decode(value["content"])
        repo.branches[revision].update(added)
        oid = hashlib.sha1(f"{repo.heads[revision]}{header['summary']}{sorted(added)}".encode()).hexdigest()
        repo.heads[revision] = oid
        repo.commits.append((revision, header["summary"], oid))
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return 200, {"commitUrl": f"{self.endpoint}/{prefix}{repo.repo_id}/commit/{oid}", "commitOid": oid,
                     "pullRequestUrl": None}, {}
