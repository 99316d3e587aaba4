"""The local Hub test server (tests/hub_server.py) through the REAL huggingface_hub / transformers clients."""

import hashlib
import os
import uuid
from pathlib import Path

import httpx2
import pytest
import torch
from hub_server import HubServer
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

torch.set_num_threads(1)


def new_repo(api, repo_type=None):
    return api.create_repo(f"test-{uuid.uuid4().hex[:8]}", repo_type=repo_type).repo_id


def write_files(folder: Path, files: dict) -> Path:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return folder


def test_create_repo_exist_ok_and_delete(api):
    url = api.create_repo("my-model")
    assert url.repo_id == "user/my-model" and url.endpoint == constants.ENDPOINT
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("user/my-model")
    assert err.value.response.status_code == 409
    assert api.create_repo("user/my-model", exist_ok=True).repo_id == "user/my-model"
    assert api.repo_exists("user/my-model")
    assert api.list_repo_files("user/my-model") == [".gitattributes"]  # the Hub's initial commit
    api.delete_repo("user/my-model")
    assert not api.repo_exists("user/my-model")
    api.delete_repo("user/my-model", missing_ok=True)
    assert api.whoami()["name"] == "user"


def test_upload_folder_to_main_and_branch_then_download(api, tmp_path):
    repo = new_repo(api)
    weights = bytes(range(256)) * 8
    write_files(tmp_path / "v0", {"config.json": '{"step": 0}', "sub/notes.txt": "zero", "model.safetensors": weights})
    first = api.upload_folder(folder_path=tmp_path / "v0", repo_id=repo, commit_message="step 0")
    api.create_branch(repo, branch="step1")
    api.create_branch(repo, branch="step1", exist_ok=True)
    write_files(tmp_path / "v1", {"config.json": '{"step": 1}', "extra/more.txt": "one"})
    second = api.upload_folder(folder_path=tmp_path / "v1", repo_id=repo, revision="step1", commit_message="step 1")

    refs = api.list_repo_refs(repo)
    assert {b.name: b.target_commit for b in refs.branches} == {"main": first.oid, "step1": second.oid}
    assert len(first.oid) == 40 and first.oid != second.oid
    assert api.model_info(repo, revision="step1").sha == second.oid
    assert [c.title for c in api.list_repo_commits(repo, revision="step1")] == ["step 1", "step 0", "initial commit"]
    assert set(api.list_repo_files(repo)) == {".gitattributes", "config.json", "sub/notes.txt", "model.safetensors"}
    assert "extra/more.txt" in api.list_repo_files(repo, revision="step1")

    tree = {e.path: e for e in api.list_repo_tree(repo, revision="step1", recursive=True, expand=True)}
    assert tree["model.safetensors"].lfs.sha256 == hashlib.sha256(weights).hexdigest()
    assert tree["config.json"].lfs is None and tree["extra"].last_commit.oid == second.oid
    assert tree["sub/notes.txt"].last_commit.oid == first.oid
    assert sorted(e.path for e in api.list_repo_tree(repo, path_in_repo="sub")) == ["sub/notes.txt"]
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(repo, path_in_repo="no_such_folder"))
    assert [p.path for p in api.get_paths_info(repo, ["config.json", "sub", "nope"])] == ["config.json", "sub"]

    cache = tmp_path / "cache"
    path = hf_hub_download(repo, "config.json", revision="step1", cache_dir=cache)
    assert Path(path).read_text() == '{"step": 1}' and f"snapshots/{second.oid}" in path
    assert Path(hf_hub_download(repo, "model.safetensors", cache_dir=cache)).read_bytes() == weights
    snap = Path(snapshot_download(repo, revision="step1", allow_patterns=["*.txt"], cache_dir=tmp_path / "snap"))
    snapped = sorted(str(p.relative_to(snap)) for p in snap.rglob("*") if p.is_file())
    assert snapped == ["extra/more.txt", "sub/notes.txt"]

    assert api.file_exists(repo, "extra/more.txt", revision="step1")
    assert not api.file_exists(repo, "extra/more.txt")
    assert api.revision_exists(repo, "step1") and not api.revision_exists(repo, "step2")
    api.delete_branch(repo, branch="step1")
    assert [b.name for b in api.list_repo_refs(repo).branches] == ["main"]


def test_revision_with_slash(api, tmp_path):
    repo = new_repo(api)
    api.create_branch(repo, branch="runs/step-2")
    commit = api.upload_file(path_or_fileobj=b"two", path_in_repo="dir/two.txt", repo_id=repo, revision="runs/step-2")
    assert api.list_repo_refs(repo).branches[1].name == "runs/step-2"
    assert api.model_info(repo, revision="runs/step-2").sha == commit.oid
    assert [e.path for e in api.list_repo_tree(repo, path_in_repo="dir", revision="runs/step-2")] == ["dir/two.txt"]
    path = hf_hub_download(repo, "dir/two.txt", revision="runs/step-2", cache_dir=tmp_path)
    assert Path(path).read_text() == "two"
    assert hf_hub_download(repo, "dir/two.txt", revision=commit.oid, cache_dir=tmp_path) == path
    api.create_tag(repo, tag="release/v2", revision="runs/step-2")
    assert api.file_exists(repo, "dir/two.txt", revision="release/v2")
    api.delete_branch(repo, branch="runs/step-2")
    assert not api.revision_exists(repo, "runs/step-2")


def test_large_lfs_upload_file_and_noop_reupload(api, hub, tmp_path):
    repo = new_repo(api)
    data = os.urandom(11 * 1024 * 1024)
    (tmp_path / "big.bin").write_bytes(data)
    api.upload_file(path_or_fileobj=tmp_path / "big.bin", path_in_repo="weights/big.safetensors", repo_id=repo)
    sibling = {s.rfilename: s for s in api.model_info(repo, files_metadata=True).siblings}["weights/big.safetensors"]
    assert sibling.lfs.sha256 == hashlib.sha256(data).hexdigest() and sibling.size == len(data)
    path = hf_hub_download(repo, "weights/big.safetensors", cache_dir=tmp_path / "cache")
    assert Path(path).read_bytes() == data
    uploads = sum(path.startswith("/_lfs_upload/") for _, path in hub.requests)
    api.upload_file(path_or_fileobj=tmp_path / "big.bin", path_in_repo="copy.safetensors", repo_id=repo)
    assert sum(path.startswith("/_lfs_upload/") for _, path in hub.requests) == uploads  # blob already stored


def test_run_as_future_uploads_and_datasets(api, tmp_path):
    repo = new_repo(api, repo_type="dataset")
    futures = [
        api.upload_file(path_or_fileobj=f"row {i}\n".encode(), path_in_repo=f"data/part{i}.txt", repo_id=repo,
                        repo_type="dataset", run_as_future=True)
        for i in range(3)
    ]
    oids = [f.result(timeout=30).oid for f in futures]
    assert len(set(oids)) == 3
    assert api.dataset_info(repo).sha == oids[-1]
    snap = snapshot_download(repo, repo_type="dataset", cache_dir=tmp_path)
    assert (Path(snap) / "data/part2.txt").read_text() == "row 2\n"


def test_tags_and_deletions(api, tmp_path):
    repo = new_repo(api)
    write_files(tmp_path, {"a.txt": "a", "dir/b.txt": "b", "dir/c.txt": "c"})
    commit = api.upload_folder(folder_path=tmp_path, repo_id=repo)
    api.create_tag(repo, tag="v1.0", tag_message="first")
    with pytest.raises(HfHubHTTPError) as err:
        api.create_tag(repo, tag="v1.0")
    assert err.value.response.status_code == 409
    assert [(t.name, t.target_commit) for t in api.list_repo_refs(repo).tags] == [("v1.0", commit.oid)]
    api.delete_file("a.txt", repo)
    api.delete_folder("dir", repo)
    assert api.list_repo_files(repo) == [".gitattributes"]
    assert set(api.list_repo_files(repo, revision="v1.0")) == {".gitattributes", "a.txt", "dir/b.txt", "dir/c.txt"}
    assert Path(hf_hub_download(repo, "a.txt", revision="v1.0", cache_dir=tmp_path / "cache")).read_text() == "a"
    with pytest.raises(EntryNotFoundError):
        api.delete_file("a.txt", repo)
    api.delete_tag(repo, tag="v1.0")
    assert not api.revision_exists(repo, "v1.0")


def test_missing_repo_revision_and_file_raise_the_right_errors(api, tmp_path):
    repo = new_repo(api)
    api.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id=repo)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("user/does-not-exist")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("user/does-not-exist", "config.json", cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo, "config.json", revision="no-such-branch", cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        api.list_repo_files(repo, revision="no-such-branch")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo, "missing.json", cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo, revision="no-such-branch")
    with pytest.raises(HfHubHTTPError) as err:
        api.create_branch(repo, branch="main")
    assert err.value.response.status_code == 409


def test_transformers_push_to_branch_and_from_pretrained(api, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", *"abcdefgh"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=16)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    assert sum(p.numel() for p in model.parameters()) < 1000

    repo = api.create_repo(f"tiny-llama-{uuid.uuid4().hex[:6]}").repo_id
    model.push_to_hub(repo, commit_message="step 0")
    tokenizer.push_to_hub(repo)
    api.create_branch(repo, branch="step1")
    with torch.no_grad():
        model.model.embed_tokens.weight.add_(1.0)
    model.push_to_hub(repo, revision="step1", commit_message="step 1")
    tokenizer.push_to_hub(repo, revision="step1")

    files = set(api.list_repo_files(repo, revision="step1"))
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= files
    loaded = AutoModelForCausalLM.from_pretrained(repo, revision="step1", cache_dir=tmp_path)
    assert torch.equal(loaded.model.embed_tokens.weight, model.model.embed_tokens.weight)
    original = AutoModelForCausalLM.from_pretrained(repo, cache_dir=tmp_path)
    assert torch.equal(original.model.embed_tokens.weight + 1.0, model.model.embed_tokens.weight)
    loaded_tok = AutoTokenizer.from_pretrained(repo, revision="step1", cache_dir=tmp_path)
    assert loaded_tok("abc")["input_ids"] == tokenizer("abc")["input_ids"]
    with pytest.raises(OSError):
        AutoModelForCausalLM.from_pretrained(repo, revision="step9", cache_dir=tmp_path)


def test_fault_500_raises_then_heals(api, hub):
    repo = new_repo(api)
    with hub.failing(500):
        with pytest.raises(HfHubHTTPError) as err:
            api.list_repo_refs(repo)
        assert err.value.response.status_code == 500
    assert api.list_repo_refs(repo).branches[0].name == "main"
    # Only commits fail, and only once: the upload's preupload + LFS steps still go through.
    hub.fail_with(500, times=1, match="/commit/")
    with pytest.raises(HfHubHTTPError):
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo)
    api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo)
    assert "x.txt" in api.list_repo_files(repo)
    # preupload / LFS batch / LFS PUT go through `http_backoff`: one 503 is retried after 1 s, and the upload succeeds.
    hub.fail_with(503, times=1, match="/preupload/")
    api.upload_file(path_or_fileobj=b"z", path_in_repo="z.txt", repo_id=repo)
    assert [m for m, p in hub.requests if p.endswith(f"{repo}/preupload/main")][-2:] == ["POST", "POST"]


def test_fault_hang_times_out(api, hub):
    repo = new_repo(api)
    with hub.hanging(5):
        with pytest.raises(httpx2.TimeoutException):
            api.model_info(repo, timeout=0.5)
    hub.hang(0.3, times=1)
    assert api.model_info(repo, timeout=5).id == repo  # slow once, then normal again
    assert api.model_info(repo, timeout=2).id == repo


def test_server_down_then_up_keeps_data(api, hub, tmp_path):
    repo = new_repo(api)
    commit = api.upload_file(path_or_fileobj=b'{"a": 1}', path_in_repo="config.json", repo_id=repo)
    cached = hf_hub_download(repo, "config.json", cache_dir=tmp_path)
    with hub.down():
        with pytest.raises(httpx2.ConnectError):
            api.list_repo_refs(repo)
        with pytest.raises(httpx2.ConnectError):
            api.create_branch(repo, branch="step1")
        # Downloads fall back on the local cache when the Hub cannot be reached.
        assert hf_hub_download(repo, "config.json", cache_dir=tmp_path) == cached
    assert api.list_repo_refs(repo).branches[0].target_commit == commit.oid
    assert Path(hf_hub_download(repo, "config.json", cache_dir=tmp_path / "fresh")).read_text() == '{"a": 1}'
    # A second server over the same storage folder serves the same repos.
    with HubServer(hub.store.root) as other:
        assert HfApi(endpoint=other.url).model_info(repo).sha == commit.oid
