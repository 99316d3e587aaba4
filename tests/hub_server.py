"""A small Hugging Face Hub-compatible HTTP server for tests (Starlette + uvicorn, 127.0.0.1 only).

The REAL `huggingface_hub` / `transformers` clients talk to it: create/delete repos, branches, tags,
preupload + LFS batch/PUT + ndjson commits, refs, repo info, tree, commits, resolve (HEAD/GET).
Everything lives on disk under `storage_dir` (one JSON file per repo, content-addressed blobs), so
a stopped server started again on the same port serves the same data.

Faults for tests of code that pushes while the Hub misbehaves:

    server.fail_with(500)           # answer requests with 500 (optionally `times=N`, `match="/commit/"`)
    server.hang(3.0)                # sleep 3 s before answering (same options)
    server.heal()                   # drop all faults (hanging requests go on at once)
    server.stop(); server.start()   # down (connection refused) / up again on the same port, same data;
                                    # requests hanging at stop() get a 503
    with server.failing(500): ...   # context-manager forms: failing, hanging, down
    server.requests, server.unrouted  # (method, path) of every request / of those no endpoint matched

Client set-up: call `configure_client_env(port)` before `huggingface_hub` is first imported.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, unquote

import uvicorn
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response

USER = "user"
PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".npy", ".npz",
                ".parquet", ".arrow", ".pkl", ".pickle", ".zip", ".gz", ".tar", ".zst", ".model", ".tflite")
LFS_MIN_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES).encode()


def configure_client_env(port: int, host: str = "127.0.0.1", timeout: int = 5) -> str:
    """Point the HF clients at http://host:port. Call before `huggingface_hub` is first imported."""
    endpoint = f"http://{host}:{port}"
    os.environ["HF_ENDPOINT"] = endpoint
    os.environ["HF_HUB_DISABLE_XET"] = "1"  # else every LFS upload goes over xet, which this server lacks
    os.environ["HF_TOKEN"] = "hf_local_test_token"
    os.environ["HF_HUB_ETAG_TIMEOUT"] = str(timeout)
    os.environ["HF_HUB_DOWNLOAD_TIMEOUT"] = str(timeout)
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["HF_HUB_DISABLE_UPDATE_CHECK"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    return endpoint


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class HubError(Exception):
    """Turned into an HTTP error answer; `code` goes to X-Error-Code (the client maps it to an exception)."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}

    def response(self) -> Response:
        headers = {"X-Error-Message": self.message, **self.headers}
        if self.code:
            headers["X-Error-Code"] = self.code
        return JSONResponse({"error": self.message}, status_code=self.status, headers=headers)


class HubStore:
    """Repos on disk: `repos/<type>/<ns>/<name>.json` (refs + commits with full file maps), `blobs/<sha256>`."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()

    # -- blobs --------------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def put_blob(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.blob_path(sha256).exists():
            tmp = self.blob_path(f"{sha256}.{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, self.blob_path(sha256))
        return sha256

    # -- repos --------------------------------------------------------------------------------
    def _path(self, repo_type: str, repo_id: str) -> Path:
        return self.root / "repos" / repo_type / f"{repo_id}.json"

    def load(self, repo_type: str, repo_id: str) -> dict:
        path = self._path(repo_type, repo_id)
        if not path.exists():
            raise HubError(404, f"Repository {repo_type}s/{repo_id} not found", "RepoNotFound")
        return json.loads(path.read_text())

    def save(self, repo: dict) -> None:
        path = self._path(repo["type"], repo["id"])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(repo))
        os.replace(tmp, path)

    def create(self, repo_type: str, repo_id: str, private: bool) -> dict:
        if self._path(repo_type, repo_id).exists():
            raise HubError(409, f"You already created this {repo_type} repo")
        repo = {"type": repo_type, "id": repo_id, "private": private, "createdAt": now_iso(),
                "branches": {}, "tags": {}, "commits": {}}
        entry = self.file_entry(GITATTRIBUTES, lfs=False)
        repo["branches"]["main"] = self.add_commit(repo, None, {".gitattributes": entry}, "initial commit", "")
        self.save(repo)
        return repo

    def delete(self, repo_type: str, repo_id: str) -> None:
        self.load(repo_type, repo_id)
        self._path(repo_type, repo_id).unlink()

    def file_entry(self, data: bytes, lfs: bool) -> dict:
        sha256 = self.put_blob(data)
        oid = git_blob_sha1(lfs_pointer(sha256, len(data)) if lfs else data)
        return {"size": len(data), "sha256": sha256, "oid": oid, "lfs": lfs}

    @staticmethod
    def add_commit(repo: dict, parent: str | None, files: dict, title: str, message: str) -> str:
        date = now_iso()
        seed = json.dumps([repo["id"], parent, title, date, sorted(files.items()), uuid.uuid4().hex])
        commit_id = hashlib.sha1(seed.encode()).hexdigest()
        repo["commits"][commit_id] = {"parent": parent, "title": title, "message": message, "date": date,
                                      "files": files}
        repo["lastModified"] = date
        return commit_id

    @staticmethod
    def resolve(repo: dict, revision: str) -> str:
        """Branch, tag, full commit id (or a unique prefix of at least 7 hex) -> commit id."""
        for refs in (repo["branches"], repo["tags"]):
            if revision in refs:
                return refs[revision]
        revision = revision.removeprefix("refs/heads/").removeprefix("refs/tags/")
        for refs in (repo["branches"], repo["tags"]):
            if revision in refs:
                return refs[revision]
        matches = [c for c in repo["commits"] if len(revision) >= 7 and c.startswith(revision)]
        if len(matches) == 1:
            return matches[0]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    @staticmethod
    def history(repo: dict, commit_id: str):
        while commit_id is not None:
            yield commit_id, repo["commits"][commit_id]
            commit_id = repo["commits"][commit_id]["parent"]


def folder_oid(files: dict, folder: str) -> str:
    inner = sorted((p, e["oid"]) for p, e in files.items() if p.startswith(folder + "/"))
    return hashlib.sha1(json.dumps(inner).encode()).hexdigest()


def last_commit(repo: dict, head: str, path: str, is_dir: bool) -> dict:
    """The newest commit (walking back from `head`) that changed `path`."""
    def state(files):
        if is_dir:
            return sorted((p, e["oid"]) for p, e in files.items() if p.startswith(path + "/"))
        return files.get(path, {}).get("oid")

    found = head
    for commit_id, commit in HubStore.history(repo, head):
        parent = commit["parent"]
        if parent is None or state(repo["commits"][parent]["files"]) != state(commit["files"]):
            found = commit_id
            break
    commit = repo["commits"][found]
    return {"id": found, "title": commit["title"], "date": commit["date"]}


def tree_entry(repo: dict, head: str, files: dict, path: str, expand: bool) -> dict:
    if path in files:
        entry = files[path]
        item = {"type": "file", "path": path, "size": entry["size"], "oid": entry["oid"]}
        if entry["lfs"]:
            item["lfs"] = {"oid": entry["sha256"], "size": entry["size"],
                           "pointerSize": len(lfs_pointer(entry["sha256"], entry["size"]))}
    else:
        item = {"type": "directory", "path": path, "oid": folder_oid(files, path)}
    if expand:
        item["lastCommit"] = last_commit(repo, head, path, is_dir=item["type"] == "directory")
    return item


def wants_lfs(path: str, size: int, sample: bytes) -> bool:
    return size > 0 and (size >= LFS_MIN_SIZE or b"\0" in sample or path.lower().endswith(LFS_SUFFIXES))


@dataclass
class Fault:
    status: int | None = None  # answer with this status
    delay: float = 0.0  # sleep this long first
    times: int | None = None  # apply to this many requests (None: until healed)
    match: str | None = None  # only for request paths containing this
    cancelled: bool = False


class HubServer:
    """The Hub app plus a uvicorn server in a background thread; `stop()`/`start()` keep the port."""

    def __init__(self, storage_dir: str | os.PathLike, port: int | None = None, host: str = "127.0.0.1"):
        self.store = HubStore(storage_dir)
        self.host, self.port = host, port or free_port(host)
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, faults included
        self.unrouted: list[tuple[str, str]] = []  # requests no endpoint matched (protocol drift shows here)
        self._faults: list[Fault] = []
        self._fault_lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> "HubServer":
        if self.is_running:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        config = uvicorn.Config(self, log_level="warning", access_log=False, lifespan="off", http="h11",
                                ws="none", loop="asyncio", timeout_graceful_shutdown=1)
        self._server, self._stopping = uvicorn.Server(config), False
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"hub-server-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise RuntimeError(f"Hub test server did not start on {self.url}")
            time.sleep(0.01)
        self._socket = sock
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down (connections are refused until `start()`); stored repos stay on disk."""
        if self._server is None:
            return
        self._stopping = True  # requests hanging in a fault answer 503 now, so shutdown is quick
        self._server.should_exit = True
        self._thread.join(timeout)
        self._socket.close()
        self._server = self._thread = None

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- faults -------------------------------------------------------------------------------
    def fail_with(self, status: int = 500, times: int | None = None, match: str | None = None) -> Fault:
        return self._add_fault(Fault(status=status, times=times, match=match))

    def hang(self, seconds: float, times: int | None = None, match: str | None = None) -> Fault:
        return self._add_fault(Fault(delay=seconds, times=times, match=match))

    def heal(self) -> None:
        with self._fault_lock:
            for fault in self._faults:
                fault.cancelled = True
            self._faults = []

    @contextlib.contextmanager
    def failing(self, status: int = 500, **kwargs):
        self.fail_with(status, **kwargs)
        try:
            yield self
        finally:
            self.heal()

    @contextlib.contextmanager
    def hanging(self, seconds: float, **kwargs):
        self.hang(seconds, **kwargs)
        try:
            yield self
        finally:
            self.heal()

    @contextlib.contextmanager
    def down(self):
        self.stop()
        try:
            yield self
        finally:
            self.start()

    def _add_fault(self, fault: Fault) -> Fault:
        with self._fault_lock:
            self._faults.append(fault)
        return fault

    def _faults_for(self, path: str) -> list[Fault]:
        with self._fault_lock:
            active = [f for f in self._faults if f.match is None or f.match in path]
            for fault in active:
                if fault.times is not None:
                    fault.times -= 1
            self._faults = [f for f in self._faults if f.times is None or f.times > 0]
        return active

    # -- ASGI entry point ---------------------------------------------------------------------
    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        self.requests.append((request.method, scope["path"]))
        response = None
        for fault in self._faults_for(scope["path"]):
            deadline = time.monotonic() + fault.delay
            while not fault.cancelled and not self._stopping and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if self._stopping:
                response = PlainTextResponse("Hub going down", status_code=503)
            elif fault.status is not None and not fault.cancelled:
                response = PlainTextResponse(f"Injected fault: HTTP {fault.status}", status_code=fault.status)
        if response is None:
            try:
                response = await self.route(request)
            except HubError as err:
                response = err.response()
        await response(scope, receive, send)

    async def route(self, request: Request) -> Response:
        raw = request.scope.get("raw_path") or request.scope["path"].encode()
        parts = [unquote(p) for p in raw.decode("latin-1").split("?")[0].strip("/").split("/")]
        method = request.method
        if parts[:1] == ["api"]:
            if parts[1:] == ["whoami-v2"]:
                return JSONResponse({"name": USER, "type": "user", "fullname": USER, "orgs": [], "auth": {}})
            if parts[1:] == ["validate-yaml"]:
                return JSONResponse({"errors": [], "warnings": []})
            if parts[1:] == ["agent-harnesses"]:  # fetched once a day by huggingface_hub's agent detection
                return JSONResponse({"standardEnvVars": [], "harnesses": {}})
            if parts[1:] == ["repos", "create"] and method == "POST":
                return await self.create_repo(request)
            if parts[1:] == ["repos", "delete"] and method == "DELETE":
                body = await request.json()
                repo_type, repo_id = body.get("type") or "model", f"{body.get('organization') or USER}/{body['name']}"
                with self.store.lock:
                    self.store.delete(repo_type, repo_id)
                return JSONResponse({})
            if len(parts) >= 4 and parts[1] in PLURAL:
                repo_type, repo_id, rest = PLURAL[parts[1]], f"{parts[2]}/{parts[3]}", parts[4:]
                return await self.repo_api(request, repo_type, repo_id, rest)
        else:
            repo_type = PLURAL.get(parts[0]) if parts[0] in ("datasets", "spaces") else "model"
            if repo_type != "model":
                parts = parts[1:]
            if len(parts) >= 4 and parts[2] == "resolve" and method in ("GET", "HEAD"):
                return self.resolve_file(repo_type, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
            if len(parts) == 6 and parts[1].endswith(".git") and parts[2:] == ["info", "lfs", "objects", "batch"]:
                return await self.lfs_batch(request, repo_type, f"{parts[0]}/{parts[1][:-4]}")
            if len(parts) == 2 and parts[0] == "_lfs_upload" and method == "PUT":
                return await self.lfs_upload(request, parts[1])
        return self.no_route(request)

    def no_route(self, request: Request) -> Response:
        self.unrouted.append((request.method, request.url.path))
        raise HubError(404, f"No route for {request.method} {request.url.path}")

    # -- endpoints ----------------------------------------------------------------------------
    async def create_repo(self, request: Request) -> Response:
        body = await request.json()
        repo_type = body.get("type") or "model"
        name = body["name"]
        repo_id = name if "/" in name else f"{body.get('organization') or USER}/{name}"
        url = f"{self.url}/{URL_PREFIX[repo_type]}{repo_id}"
        private = bool(body.get("private")) or body.get("visibility") == "private"
        try:
            with self.store.lock:
                self.store.create(repo_type, repo_id, private)
        except HubError as err:
            return JSONResponse({"error": err.message, "url": url}, status_code=err.status)
        return JSONResponse({"url": url, "name": repo_id, "id": uuid.uuid4().hex})

    async def repo_api(self, request: Request, repo_type: str, repo_id: str, rest: list[str]) -> Response:
        method, store = request.method, self.store
        action = rest[0] if rest else None
        with store.lock:
            repo = store.load(repo_type, repo_id)
        if action is None or action == "revision":
            return self.repo_info(repo, rest[1] if len(rest) > 1 else "main")
        if action == "refs":
            def refs(kind, items):
                return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": c} for n, c in sorted(items.items())]
            data = {"branches": refs("heads", repo["branches"]), "tags": refs("tags", repo["tags"]), "converts": []}
            if request.query_params.get("include_prs"):
                data["pullRequests"] = []
            return JSONResponse(data)
        if action == "tree" and len(rest) >= 2:
            return self.tree(request, repo, rest[1], "/".join(rest[2:]))
        if action == "paths-info" and len(rest) == 2:
            return await self.paths_info(request, repo, rest[1])
        if action == "commits" and len(rest) == 2:
            head = store.resolve(repo, rest[1])
            return JSONResponse([
                {"id": cid, "title": c["title"], "message": c["message"], "date": c["date"],
                 "authors": [{"user": USER, "avatar": ""}]} for cid, c in store.history(repo, head)])
        if action == "preupload" and len(rest) == 2 and method == "POST":
            return await self.preupload(request, repo, rest[1])
        if action == "commit" and len(rest) == 2 and method == "POST":
            return await self.commit(request, repo_type, repo_id, rest[1])
        if action in ("branch", "tag") and len(rest) == 2 and method in ("POST", "DELETE"):
            return await self.edit_ref(request, repo_type, repo_id, action, rest[1])
        return self.no_route(request)

    def repo_info(self, repo: dict, revision: str) -> Response:
        head = self.store.resolve(repo, revision)
        files = repo["commits"][head]["files"]
        siblings = []
        for path, entry in sorted(files.items()):
            sibling = {"rfilename": path, "size": entry["size"], "blobId": entry["oid"]}
            if entry["lfs"]:
                pointer_size = len(lfs_pointer(entry["sha256"], entry["size"]))
                sibling["lfs"] = {"size": entry["size"], "sha256": entry["sha256"], "pointerSize": pointer_size}
            siblings.append(sibling)
        data = {"_id": hashlib.md5(repo["id"].encode()).hexdigest()[:24], "id": repo["id"],
                "author": repo["id"].split("/")[0], "sha": head, "lastModified": repo["commits"][head]["date"], "createdAt": repo["createdAt"],
                "private": repo["private"], "gated": False, "disabled": False, "downloads": 0, "likes": 0,
                "tags": [], "siblings": siblings}
        if repo["type"] == "model":
            data["modelId"] = repo["id"]
        if repo["type"] == "space":
            data.update(sdk="static", runtime={"stage": "RUNNING", "hardware": {"current": None, "requested": None}})
        return JSONResponse(data)

    def tree(self, request: Request, repo: dict, revision: str, path: str) -> Response:
        head = self.store.resolve(repo, revision)
        files = repo["commits"][head]["files"]
        recursive = request.query_params.get("recursive", "false").lower() in ("1", "true")
        expand = request.query_params.get("expand", "false").lower() in ("1", "true")
        prefix = f"{path}/" if path else ""
        if path and not any(p.startswith(prefix) for p in files):
            raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound",
                           {"X-Repo-Commit": head})
        paths = set()
        for file_path in files:
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix):].split("/")
            depth = len(parts) if recursive else 1
            for i in range(1, depth + 1):
                paths.add(prefix + "/".join(parts[:i]))
        # Directories first, then files, each sorted (as the Hub does).
        ordered = sorted(paths, key=lambda p: (p in files, p))
        return JSONResponse([tree_entry(repo, head, files, p, expand) for p in ordered])

    async def paths_info(self, request: Request, repo: dict, revision: str) -> Response:
        head = self.store.resolve(repo, revision)
        files = repo["commits"][head]["files"]
        form = parse_qs((await request.body()).decode())
        expand = form.get("expand", ["False"])[0].lower() in ("1", "true")
        found = [p.strip("/") for p in form.get("paths", [])]
        found = [p for p in found if p in files or any(f.startswith(p + "/") for f in files)]
        return JSONResponse([tree_entry(repo, head, files, p, expand) for p in found])

    async def preupload(self, request: Request, repo: dict, revision: str) -> Response:
        head = self.store.resolve(repo, revision)
        files = repo["commits"][head]["files"]
        answer = []
        for item in (await request.json())["files"]:
            sample = base64.b64decode(item.get("sample") or "")
            lfs = wants_lfs(item["path"], item["size"], sample)
            existing = files.get(item["path"])
            oid = None
            if existing is not None and existing["lfs"] == lfs:
                oid = existing["sha256"] if lfs else existing["oid"]
            answer.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular",
                           "shouldIgnore": False, "oid": oid})
        return JSONResponse({"files": answer, "commitOid": head})

    async def lfs_batch(self, request: Request, repo_type: str, repo_id: str) -> Response:
        with self.store.lock:
            self.store.load(repo_type, repo_id)
        body = json.loads(await request.body())
        objects = []
        for obj in body.get("objects", []):
            answer = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if not self.store.blob_path(obj["oid"]).exists():
                answer["actions"] = {"upload": {"href": f"{self.url}/_lfs_upload/{obj['oid']}", "header": {}}}
            objects.append(answer)
        return JSONResponse({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                            media_type="application/vnd.git-lfs+json")

    async def lfs_upload(self, request: Request, oid: str) -> Response:
        digest, chunks = hashlib.sha256(), []
        async for chunk in request.stream():
            digest.update(chunk)
            chunks.append(chunk)
        if digest.hexdigest() != oid:
            raise HubError(400, f"sha256 mismatch: expected {oid}, got {digest.hexdigest()}")
        self.store.put_blob(b"".join(chunks))
        return Response(status_code=200)

    async def commit(self, request: Request, repo_type: str, repo_id: str, branch: str) -> Response:
        lines = [json.loads(line) for line in (await request.body()).decode().splitlines() if line.strip()]
        header = next((item["value"] for item in lines if item["key"] == "header"), {})
        with self.store.lock:
            repo = self.store.load(repo_type, repo_id)
            if branch not in repo["branches"]:
                raise HubError(404, f"Branch {branch} not found (commits go to branches)", "RevisionNotFound")
            head = repo["branches"][branch]
            if header.get("parentCommit") and header["parentCommit"] != head:
                raise HubError(412, f"A commit has happened since {header['parentCommit']}; head is {head}")
            files = dict(repo["commits"][head]["files"])
            for item in lines:
                key, value = item["key"], item["value"]
                path = value.get("path", "").strip("/")
                if key == "file":
                    files[path] = self.store.file_entry(base64.b64decode(value["content"]), lfs=False)
                elif key == "lfsFile":
                    blob = self.store.blob_path(value["oid"])
                    if not blob.exists():
                        raise HubError(422, f"LFS object {value['oid']} for {path} was never uploaded")
                    size = blob.stat().st_size
                    files[path] = {"size": size, "sha256": value["oid"], "lfs": True,
                                   "oid": git_blob_sha1(lfs_pointer(value["oid"], size))}
                elif key == "deletedFile":
                    if files.pop(path, None) is None:
                        raise HubError(404, f"File {path} not found", "EntryNotFound", {"X-Repo-Commit": head})
                elif key == "deletedFolder":
                    inside = [p for p in files if p.startswith(path + "/")]
                    if not inside:
                        raise HubError(404, f"Folder {path} not found", "EntryNotFound", {"X-Repo-Commit": head})
                    for p in inside:
                        del files[p]
                elif key != "header":
                    raise HubError(400, f"Unsupported commit operation {key!r}")
            commit_id = self.store.add_commit(repo, head, files, header.get("summary") or "Update",
                                              header.get("description") or "")
            repo["branches"][branch] = commit_id
            self.store.save(repo)
        return JSONResponse({"commitOid": commit_id, "success": True, "pullRequestUrl": None,
                             "commitUrl": f"{self.url}/{URL_PREFIX[repo_type]}{repo_id}/commit/{commit_id}"})

    async def edit_ref(self, request: Request, repo_type: str, repo_id: str, kind: str, name: str) -> Response:
        body = (await request.json()) if await request.body() else {}
        with self.store.lock:
            repo = self.store.load(repo_type, repo_id)
            refs = repo["branches" if kind == "branch" else "tags"]
            if request.method == "DELETE":
                if name not in refs:
                    raise HubError(404, f"Invalid rev id: {name}", "RevisionNotFound")
                if kind == "branch" and name == "main":
                    raise HubError(403, "Cannot delete the default branch")
                del refs[name]
            elif kind == "branch":
                if name in refs:
                    raise HubError(409, f"Reference refs/heads/{name} already exists")
                refs[name] = self.store.resolve(repo, body.get("startingPoint") or "main")
            else:  # tag: URL names the revision, body names the tag
                if body["tag"] in refs:
                    raise HubError(409, f"Tag {body['tag']} already exists")
                refs[body["tag"]] = self.store.resolve(repo, name)
            self.store.save(repo)
        return JSONResponse({})

    def resolve_file(self, repo_type: str, repo_id: str, revision: str, path: str) -> Response:
        with self.store.lock:
            repo = self.store.load(repo_type, repo_id)
        head = self.store.resolve(repo, revision)
        entry = repo["commits"][head]["files"].get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": head})
        headers = {"X-Repo-Commit": head, "ETag": f'"{entry["oid"]}"'}
        if entry["lfs"]:
            headers.update({"ETag": f'"{entry["sha256"]}"', "X-Linked-Etag": f'"{entry["sha256"]}"',
                            "X-Linked-Size": str(entry["size"])})
        return FileResponse(self.store.blob_path(entry["sha256"]), headers=headers,
                            media_type="application/octet-stream")
