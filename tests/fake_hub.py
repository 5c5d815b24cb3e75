"""A small stand-in for the Hugging Face Hub HTTP API (stdlib only), served on 127.0.0.1 for tests.

Adapted from reference/environment.md appendix B: create_repo, preupload, commit (small files inline, binary files
through the git-LFS "basic" batch API; clients need ``HF_HUB_DISABLE_XET=1``), model_info/revision, refs,
paths-info, tree, validate-yaml and HEAD/GET ``resolve`` downloads (ETag, X-Repo-Commit), which is what
huggingface_hub, timm (``hf-hub:``) and transformers call. Additions for our tests: every commit is kept, so a
revision can be a branch name or an old commit sha, and ``fail`` injects failures (an HTTP 500 or a dropped
connection) into chosen routes.

Dataset repos (``repo_type="dataset"``) use the same routes under ``/api/datasets/...``, ``/datasets/<id>/resolve``
and ``/datasets/<id>.git/info/lfs``; what ``datasets.load_dataset(id, streaming=True)`` reads through
``HfFileSystem`` also needs recursive tree listings with directory entries, paths-info for folders and ``Range``
GETs (206 / 416). ``Store.put`` places files in a repo without going through the upload API.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".png", ".npy", ".parquet", ".arrow")
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}  # URL segment -> repo_type


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Store:
    """Repos with their full commit history: {(repo_type, repo_id): {"commits": [(sha, files)], "branches": {..}}}.

    ``repo_type`` is "model" (the default everywhere), "dataset" or "space"; a model and a dataset may share an id.
    """

    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}
        self.blobs: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.fail: dict[str, list[str]] = {}  # route name -> queue of "500" | "drop"
        self.requests: list[str] = []
        self.summaries: list[tuple[str, str]] = []  # (repo_id, commit message) of every commit: public on the Hub

    def create(self, repo_id: str, repo_type: str = "model") -> bool:
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                return False
            sha = hashlib.sha1(f"{repo_type}/{repo_id}/init".encode()).hexdigest()
            self.repos[(repo_type, repo_id)] = {"commits": [(sha, {})], "branches": {"main": sha}}
            return True

    def get(self, repo_id: str, repo_type: str = "model") -> dict | None:
        return self.repos.get((repo_type, repo_id))

    def files(self, repo_id: str, revision: str | None, repo_type: str = "model") -> tuple[str, dict] | None:
        repo = self.repos[(repo_type, repo_id)]
        sha = repo["branches"].get(revision or "main", revision)
        for commit_sha, files in repo["commits"]:
            if commit_sha == sha:
                return commit_sha, files
        return None

    def commit(self, repo_id: str, branch: str, adds: dict, deletes: list, summary: str,
               repo_type: str = "model") -> str:
        with self.lock:
            repo = self.repos[(repo_type, repo_id)]
            _, files = self.files(repo_id, branch, repo_type) or self.files(repo_id, "main", repo_type)
            files = dict(files)
            for path in deletes:
                files = {k: v for k, v in files.items() if k != path and not k.startswith(path.rstrip("/") + "/")}
            files.update(adds)
            sha = hashlib.sha1(f"{repo_id}/{len(repo['commits'])}/{summary}".encode()).hexdigest()
            repo["commits"].append((sha, files))
            repo["branches"][branch] = sha
            self.summaries.append((repo_id, summary))
            return sha

    def put(self, repo_id: str, files: dict[str, bytes], repo_type: str = "dataset", summary: str = "put") -> str:
        """Create the repo if needed and commit ``files`` ({path: bytes}) to main directly; returns the commit sha."""
        self.create(repo_id, repo_type)
        return self.commit(repo_id, "main", dict(files), [], summary, repo_type)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    store: Store

    def log_message(self, fmt, *args) -> None:
        ranged = getattr(self, "headers", None) and self.headers.get("Range")
        self.store.requests.append(f"{self.command} {self.path}" + (f" Range={ranged}" if ranged else ""))

    def _send(self, code, body=b"", ctype="application/json", headers=None, head=False) -> None:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _err(self, code, kind, msg, head=False) -> None:
        self._send(code, {"error": msg}, headers={"X-Error-Code": kind, "X-Error-Message": msg}, head=head)

    def _body(self) -> bytes:
        if self._raw is None:
            n = int(self.headers.get("Content-Length") or 0)
            self._raw = self.rfile.read(n) if n else b""
        return self._raw

    def _injected(self, route: str) -> bool:
        """Apply a queued failure for this route: True when the request was answered (or dropped)."""
        queue = self.store.fail.get(route)
        if not queue:
            return False
        kind = queue.pop(0)
        if kind == "drop":
            self.close_connection = True
            self.connection.shutdown(2)  # the client sees the connection reset mid-request
            return True
        self._err(500, "InternalError", "fake hub: injected server error")
        return True

    def _info(self, repo_id, sha, files) -> dict:
        return {"id": repo_id, "modelId": repo_id, "sha": sha, "private": False, "gated": False, "disabled": False,
                "author": repo_id.split("/")[0], "lastModified": "2026-01-01T00:00:00.000Z", "tags": [],
                "downloads": 0, "likes": 0, "cardData": None,
                "siblings": [{"rfilename": p, "size": len(d)} for p, d in sorted(files.items())]}

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def do_PUT(self) -> None:
        self._raw = None
        data = self._body()
        match = re.match(r"^/lfs-upload/([0-9a-f]{64})$", urlparse(self.path).path)
        if self._injected("lfs-upload"):
            return None
        if not match or hashlib.sha256(data).hexdigest() != match.group(1):
            return self._err(400, "BadRequest", "fake hub: bad LFS upload")
        self.store.blobs[match.group(1)] = data
        return self._send(200, b"")

    def _route(self, head=False) -> None:  # noqa: C901 (one flat router, like the appendix)
        self._raw = None
        if self.command == "POST":
            self._body()
        url = urlparse(self.path)
        path, method = unquote(url.path), self.command
        store = self.store
        lfs_batch = re.match(r"^/(?:(?:datasets|spaces)/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch$", path)
        if lfs_batch and method == "POST":
            objects = []
            for o in json.loads(self._body())["objects"]:
                entry = {"oid": o["oid"], "size": o["size"], "authenticated": True}
                if o["oid"] not in store.blobs:
                    entry["actions"] = {"upload": {"href": f"http://{self.headers['Host']}/lfs-upload/{o['oid']}"}}
                objects.append(entry)
            return self._send(200, {"transfer": "basic", "objects": objects}, ctype="application/vnd.git-lfs+json")
        if path == "/api/validate-yaml":
            return self._send(200, {"errors": [], "warnings": []})
        if path == "/api/whoami-v2":
            return self._send(200, {"type": "user", "name": "testuser", "orgs": [],
                                    "auth": {"accessToken": {"role": "write"}}}, head=head)
        if path == "/api/repos/create" and method == "POST":
            if self._injected("create"):
                return None
            body = json.loads(self._body() or b"{}")
            repo_type = body.get("type") or "model"
            repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
            if "/" not in repo_id:
                repo_id = "testuser/" + repo_id
            prefix = "" if repo_type == "model" else repo_type + "s/"
            repo_url = f"http://{self.headers['Host']}/{prefix}{repo_id}"
            if not store.create(repo_id, repo_type):  # the real Hub's 409 carries the url too (exist_ok reads it)
                return self._send(409, {"error": "You already created this repo", "url": repo_url},
                                  headers={"X-Error-Code": "RepoExists", "X-Error-Message": "repo exists"})
            return self._send(200, {"url": repo_url, "name": repo_id, "id": repo_id})
        match = re.match(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)"
                         r"(?:/(revision|preupload|commit|paths-info|tree|refs|branch)(?:/([^/]+))?(/.*)?)?$", path)
        if match:
            segment, repo_id, verb, rev, rest = match.groups()
            repo_type = REPO_TYPES[segment]
            if store.get(repo_id, repo_type) is None:
                return self._err(404, "RepoNotFound", "Repository not found", head=head)
            if verb == "branch" and method == "POST":
                branches = store.get(repo_id, repo_type)["branches"]
                if rev in branches:
                    return self._err(409, "RefAlreadyExists", "Reference already exists")
                branches[rev] = branches["main"]
                return self._send(200, {})
            found = store.files(repo_id, rev, repo_type)
            if found is None and verb not in ("preupload", "commit"):
                return self._err(404, "RevisionNotFound", f"Invalid rev id: {rev}", head=head)
            if verb in (None, "revision"):
                return self._send(200, self._info(repo_id, *found), head=head)
            if verb == "refs":
                branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": s}
                            for b, s in store.get(repo_id, repo_type)["branches"].items()]
                return self._send(200, {"branches": branches, "tags": [], "converts": []})
            if verb == "preupload":
                if self._injected("preupload"):
                    return None
                files = json.loads(self._body())["files"]
                return self._send(200, {"files": [{"path": f["path"], "shouldIgnore": False,
                                                   "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES)
                                                   else "regular"} for f in files]})
            if verb == "commit":
                if self._injected("commit"):
                    return None
                adds, deletes, summary = {}, [], ""
                for line in self._body().splitlines():
                    if not line.strip():
                        continue
                    op = json.loads(line)
                    key, value = op["key"], op["value"]
                    if key == "header":
                        summary = value.get("summary", "")
                    elif key == "file":
                        adds[value["path"]] = (base64.b64decode(value["content"]) if value.get("encoding") == "base64"
                                               else value["content"].encode())
                    elif key in ("deletedFile", "deletedFolder"):
                        deletes.append(value["path"])
                    elif key == "lfsFile":
                        if value["oid"] not in store.blobs:
                            return self._err(400, "BadRequest", f"fake hub: LFS object {value['oid']} not uploaded")
                        adds[value["path"]] = store.blobs[value["oid"]]
                prefix = "" if repo_type == "model" else segment + "/"
                branch, pr_url = rev or "main", None
                if "create_pr=1" in url.query or "create_pr=true" in url.query.lower():  # a pull request's ref
                    branches = store.get(repo_id, repo_type)["branches"]
                    number = 1 + sum(name.startswith("refs/pr/") for name in branches)
                    branch = f"refs/pr/{number}"
                    branches[branch] = branches[rev or "main"]
                    pr_url = f"http://{self.headers['Host']}/{prefix}{repo_id}/discussions/{number}"
                sha = store.commit(repo_id, branch, adds, deletes, summary, repo_type)
                return self._send(200, {"commitUrl": f"http://{self.headers['Host']}/{prefix}{repo_id}/commit/{sha}",
                                        "commitOid": sha, "pullRequestUrl": pr_url})
            sha, files = found
            if verb == "paths-info":
                body = self._body().decode()
                ctype = self.headers.get("Content-Type", "")
                paths = json.loads(body)["paths"] if "json" in ctype else parse_qs(body).get("paths", [])
                out = []
                for p in paths:
                    p = p.strip("/")
                    if p in files:
                        out.append(_file_entry(p, files[p]))
                    elif not p or any(f.startswith(p + "/") for f in files):
                        out.append({"type": "directory", "path": p, "oid": git_oid(p.encode()), "size": 0})
                return self._send(200, out)
            if verb == "tree":
                prefix = (rest or "").strip("/")
                if prefix and not any(f.startswith(prefix + "/") for f in files):
                    return self._err(404, "EntryNotFound", f"{prefix} does not exist", head=head)
                recursive = parse_qs(url.query).get("recursive", ["false"])[0].lower() in ("1", "true")
                return self._send(200, _tree(files, prefix, recursive), head=head)
        match = re.match(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if match and method in ("GET", "HEAD"):
            if method == "GET" and self._injected("resolve"):  # a download's connection broken (or a 500)
                return None
            segment, repo_id, rev, file_path = match.groups()
            repo_type = REPO_TYPES[segment or "models"]
            if store.get(repo_id, repo_type) is None:
                return self._err(404, "RepoNotFound", "Repository not found", head=head)
            found = store.files(repo_id, rev, repo_type)
            if found is None:
                return self._err(404, "RevisionNotFound", f"Invalid rev id: {rev}", head=head)
            sha, files = found
            if file_path not in files:
                return self._err(404, "EntryNotFound", "Entry not found", head=head)
            data = files[file_path]
            headers = {"X-Repo-Commit": sha, "ETag": f'"{git_oid(data)}"', "Accept-Ranges": "bytes"}
            span = _byte_range(self.headers.get("Range"), len(data))
            if span is None:  # no (usable) Range header: the whole file
                return self._send(200, data, ctype="application/octet-stream", head=head, headers=headers)
            start, stop = span
            if start >= stop:  # e.g. "bytes=N-" at the end of the file (HfFileSystem reads past the end this way)
                return self._err(416, "RangeNotSatisfiable", "Range Not Satisfiable", head=head)
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
            return self._send(206, data[start:stop], ctype="application/octet-stream", head=head, headers=headers)
        return self._err(404, "NotFound", f"fake hub: no route for {method} {path}", head=head)


def _file_entry(path: str, data: bytes) -> dict:
    return {"type": "file", "path": path, "size": len(data), "oid": git_oid(data)}


def _tree(files: dict[str, bytes], prefix: str, recursive: bool) -> list[dict]:
    """The Hub's tree listing under ``prefix``: direct children (files and folders), or everything if recursive."""
    out, folders = [], set()
    for path, data in sorted(files.items()):
        if prefix and not path.startswith(prefix + "/"):
            continue
        parts = (path[len(prefix) + 1:] if prefix else path).split("/")
        for depth in range(1, len(parts) if recursive else min(2, len(parts))):
            folder = "/".join(([prefix] if prefix else []) + parts[:depth])
            if folder not in folders:
                folders.add(folder)
                out.append({"type": "directory", "path": folder, "oid": git_oid(folder.encode()), "size": 0})
        if recursive or len(parts) == 1:
            out.append(_file_entry(path, data))
    return out


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, stop) of a single ``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` Range header, or None for none/other."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header or "")
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if not first:  # suffix: the last n bytes
        return max(0, size - int(last)), size
    return int(first), min(size, int(last) + 1) if last else size


def serve() -> tuple[ThreadingHTTPServer, str, Store]:
    """Start a server on a free 127.0.0.1 port in a daemon thread; returns (server, endpoint url, store)."""
    store = Store()
    handler = type("BoundHandler", (Handler,), {"store": store})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}", store
