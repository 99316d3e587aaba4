"""`grokcopy series` against the local Hub test server, with real tiny LLaMA checkpoints on branches."""

import csv
import hashlib
import json
import shutil
import string
import uuid

import pytest
import torch

from grokcopy.cli import main as grokcopy_main
from grokcopy.copytest.task import CopyTaskConfig, build_copy_task
from grokcopy.errors import SeriesError
from grokcopy.hub import revisions, runner
from grokcopy.hub.revisions import PYTHIA_TOKENS_PER_STEP, default_tokens_per_step, parse_revision, select_revisions
from grokcopy.hub.series import analyze_series

torch.set_num_threads(1)

SAMPLES = 6  # copy-test samples per revision: enough to compare numbers, quick on one thread
COPY = CopyTaskConfig(num_samples=SAMPLES)


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tiny_checkpoint(tokenizer, seed, folder, step):
    """A 2-layer LLaMA (hidden 32, context 256) saved with its tokenizer and a trainer_state.json."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
                         tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # weights that differ visibly per branch (norms too)
        for name, p in model.named_parameters():
            p.normal_(1.0, 0.5) if "norm" in name else p.normal_(0.0, 0.3)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_trainer_state(folder, step)
    return folder


def write_trainer_state(folder, step):
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "num_input_tokens_seen": step * 1000}))


def push(api, repo_id, branch, folder):
    api.create_branch(repo_id, branch=branch)
    api.upload_folder(folder_path=folder, repo_id=repo_id, revision=branch, commit_message=f"checkpoint {branch}")


@pytest.fixture(scope="module")
def series_repo(hub, tmp_path_factory):
    """Branches step0/step2/step4 (own weights), step6 (step4's weights, own trainer state), final (step 8)."""
    from huggingface_hub import HfApi

    from grokcopy.training.data import train_tokenizer

    api = HfApi()
    root = tmp_path_factory.mktemp("series_checkpoints")
    tokenizer = train_tokenizer(["the quick brown fox jumps over the lazy dog\n",
                                 string.ascii_letters + string.digits + " .,;:!?\n"], kind="char")
    repo_id = api.create_repo(f"series-{uuid.uuid4().hex[:8]}").repo_id
    folders = {}
    for seed, step in enumerate((0, 2, 4)):
        folders[f"step{step}"] = tiny_checkpoint(tokenizer, seed, root / f"step{step}", step)
        push(api, repo_id, f"step{step}", folders[f"step{step}"])
    folders["step6"] = shutil.copytree(folders["step4"], root / "step6")
    write_trainer_state(folders["step6"], 6)
    push(api, repo_id, "step6", folders["step6"])
    folders["final"] = tiny_checkpoint(tokenizer, 9, root / "final", 8)
    push(api, repo_id, "final", folders["final"])
    return repo_id, folders


def local_analysis(folder, copy_samples=SAMPLES, symbols="tokens", seed=1234):
    """The copy test + induction analysis computed directly on the checkpoint folder we pushed."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grokcopy.analysis.architectures import model_context_length
    from grokcopy.analysis.induction import analyze_induction
    from grokcopy.copytest.scoring import score_copy_task
    from grokcopy.copytest.task import CopyTaskConfig, build_copy_task

    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    task = build_copy_task(tokenizer, CopyTaskConfig(num_samples=copy_samples, symbols=symbols, seed=seed),
                           max_length=model_context_length(model))
    return score_copy_task(model, task), analyze_induction(model, seq_len=100, with_bos=True).to_dict()


class Counter:
    """Wraps a series function and counts its calls (which revisions were downloaded / analysed)."""

    def __init__(self, monkeypatch, name, fail_on_call=None):
        self.calls, self.wrapped, self.fail_on_call = 0, getattr(runner, name), fail_on_call
        monkeypatch.setattr(runner, name, self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt("simulated crash")
        return self.wrapped(*args, **kwargs)


# ----------------------------------------------------------------------------- names, selection, tokens


@pytest.mark.parametrize("name, expected", [
    ("step0", (0, None)),
    ("step143000", (143000, None)),  # Pythia
    ("step1000-tokens4B", (1000, 4_000_000_000)),  # OLMo
    ("step738020-tokens3095B", (738020, 3_095_000_000_000)),
    ("stage1-step1000-tokens5B", (1000, 5_000_000_000)),  # OLMo-2
    ("stage2-ingredient3-step11931-tokens50B", (11931, 50_000_000_000)),
    ("step10-tokens1.5M", (10, 1_500_000)),
    ("step3-tokens7k", (3, 7000)),
    ("step2-tokens4T", (2, 4 * 10**12)),
    ("step5-tokens2097152", (5, 2097152)),
    ("checkpoint-1000", (1000, None)),  # Trainer
    ("global_step250", (250, None)),
    ("main", None), ("v1.0", None), ("steps", None), ("mystep10", None), ("checkpoint-", None),
    ("step1000-tokens", None), ("step10-foo", None),
])
def test_parse_revision(name, expected):
    assert parse_revision(name) == expected


def test_select_revisions_sorts_by_stage_and_step_and_keeps_every_kth_plus_last():
    names = ["main", "step10", "step2", "step100", "checkpoint-5"]
    assert select_revisions(names) == ["step2", "checkpoint-5", "step10", "step100", "main"]
    olmo2 = ["stage2-ingredient1-step10-tokens1B", "stage1-step20-tokens2B", "stage1-step10-tokens1B",
             "stage2-ingredient2-step5-tokens1B"]
    assert select_revisions(olmo2) == ["stage1-step10-tokens1B", "stage1-step20-tokens2B",
                                       "stage2-ingredient1-step10-tokens1B", "stage2-ingredient2-step5-tokens1B"]
    steps = [f"step{i}" for i in range(10)]
    assert select_revisions(steps, every=4) == ["step0", "step4", "step8", "step9"]
    assert select_revisions(steps, every=3) == ["step0", "step3", "step6", "step9"]
    assert select_revisions(steps, every=50) == ["step0", "step9"]
    with pytest.raises(SeriesError):
        select_revisions(steps, every=0)


def test_tokens_from_name_then_trainer_state_then_tokens_per_step():
    assert default_tokens_per_step("EleutherAI/pythia-160m-deduped") == PYTHIA_TOKENS_PER_STEP
    assert default_tokens_per_step("allenai/OLMo-1B-hf") is None
    tokens = revisions.record_tokens
    assert tokens({"step": 10, "name_tokens": 5, "trainer_state": {"num_input_tokens_seen": 7}}, 3) == (5, "revision name")
    assert tokens({"step": 10, "trainer_state": {"num_input_tokens_seen": 7}}, 3) == (7, "trainer_state.json")
    assert tokens({"step": 10, "trainer_state": {"num_input_tokens_seen": 0}}, 3) == (30, "tokens_per_step")
    assert tokens({"step": 0, "trainer_state": {"num_input_tokens_seen": 0}}, None) == (0, "trainer_state.json")
    assert tokens({"step": 10}, PYTHIA_TOKENS_PER_STEP) == (10 * 2_097_152, "tokens_per_step")
    assert tokens({"step": 10}, None) == (None, None)


# ----------------------------------------------------------------------------- the series on the test Hub


def test_series_matches_local_analysis_dedupes_resumes_and_cleans_up(api, hub, series_repo, tmp_path, monkeypatch):
    repo_id, folders = series_repo
    out = tmp_path / "series"

    # A run killed during its second analysis keeps the first revision (series.json is written per revision).
    with monkeypatch.context() as patch:
        Counter(patch, "analyse_model", fail_on_call=2)
        with pytest.raises(KeyboardInterrupt):
            analyze_series(repo_id, out_dir=out, copy=COPY, progress=False, device="cpu")
    saved = json.loads((out / "series.json").read_text())
    assert [r["revision"] for r in saved["records"]] == ["step0"]
    first_step0 = saved["records"][0]["analysed_at"]

    downloads, analyses = Counter(monkeypatch, "download"), Counter(monkeypatch, "analyse_model")
    from grokcopy.copytest import task as copy_task

    builds = []
    monkeypatch.setattr(copy_task, "build_copy_task", lambda *a, **k: builds.append(1) or build_copy_task(*a, **k))
    records = analyze_series(repo_id, out_dir=out, copy=COPY, progress=False, device="cpu")
    assert (downloads.calls, analyses.calls) == (2, 2)  # step2, step4: step0 resumed, step6 a duplicate
    assert len(builds) == 1  # the same tokenizer files: one tokenizer, one copy task for both revisions
    assert [r["revision"] for r in records] == ["step0", "step2", "step4", "step6"]  # main, final: no checkpoint names
    assert records[0]["analysed_at"] == first_step0

    for record in records[:3]:
        folder = folders[record["revision"]]
        copy, induction = local_analysis(folder)
        assert record["exact_match"] == copy["exact_match"]
        assert record["token_accuracy"] == copy["token_accuracy"]
        assert record["copy"]["per_position"] == copy["per_position"]
        assert record["induction"] == induction
        assert record["induction_max"] == [max(row) for row in induction["induction"]]
        # The fingerprint is the sha256 of the weight bytes, from the tree listing's LFS info.
        assert record["weights_sha256"] == [sha256(folder / "model.safetensors")]
        assert record["step"] == int(record["revision"][4:])
        assert (record["tokens"], record["tokens_source"]) == (record["step"] * 1000, "trainer_state.json")
        assert record["duplicate_of"] is None and record["copy_error"] is None and record["induction_error"] is None
    assert records[1]["induction"] != records[2]["induction"]
    dup = records[3]
    assert dup["duplicate_of"] == "step4" and dup["step"] == 6
    assert dup["exact_match"] is None and dup["induction_max"] is None and "analysed_at" not in dup
    assert dup["weights_sha256"] == records[2]["weights_sha256"]

    saved = json.loads((out / "series.json").read_text())
    assert saved["repo_id"] == repo_id and saved["records"] == records
    with open(out / "series.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["revision", "step", "tokens", "exact_match", "token_accuracy", "max_I_layer0",
                             "max_I_layer1", "duplicate_of", "suspect", "discontinuity", "error"]
    assert [(r["revision"], r["step"], r["duplicate_of"]) for r in rows] == [
        ("step0", "0", ""), ("step2", "2", ""), ("step4", "4", ""), ("step6", "6", "step4")]
    assert float(rows[2]["max_I_layer1"]) == records[2]["induction_max"][1]
    assert rows[3]["exact_match"] == "" and rows[1]["tokens"] == "2000"
    assert (out / "series_copy.png").stat().st_size > 0 and (out / "series_induction.png").stat().st_size > 0
    assert not (out / "weights").exists()  # downloads deleted after each analysis
    assert not list(out.glob("*.tmp*"))

    # A rerun recomputes nothing and downloads no file; the records stay as they were.
    downloads.calls = analyses.calls = 0
    before = len(hub.requests)
    again = analyze_series(repo_id, out_dir=out, copy=COPY, progress=False, device="cpu")
    assert (downloads.calls, analyses.calls) == (0, 0)
    assert not any("/resolve/" in path for _, path in hub.requests[before:])
    assert again == records

    # Other copy-test settings are another measurement: those revisions are analysed again.
    redone = analyze_series(repo_id, revisions="step0", out_dir=out, copy=CopyTaskConfig(num_samples=SAMPLES + 1),
                            progress=False, device="cpu")
    assert analyses.calls == 1 and redone[0]["copy"]["num_samples"] == SAMPLES + 1


def test_cli_every_and_keep_weights(api, series_repo, tmp_path, capsys):
    repo_id, folders = series_repo
    out = tmp_path / "every"
    assert grokcopy_main(["series", repo_id, "--every", "2", "--out", str(out), "--copy-samples", "4",
                          "--symbols", "hex", "--keep-weights", "--no-progress", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "step6: step 6" in printed and "duplicate of step4" in printed
    records = json.loads((out / "series.json").read_text())["records"]
    assert [r["revision"] for r in records] == ["step0", "step4", "step6"]  # every 2nd of 0,2,4,6 + the last
    assert records[2]["duplicate_of"] == "step4"
    assert records[0]["settings"]["copy_symbols"] == "hex" and records[0]["copy"]["num_samples"] == 4
    copy, _ = local_analysis(folders["step4"], copy_samples=4, symbols="hex")
    assert records[1]["exact_match"] == copy["exact_match"] and records[1]["token_accuracy"] == copy["token_accuracy"]
    for name in ("step0", "step4"):  # kept, and only the files the analysis needs
        kept = out / "weights" / name
        assert sha256(kept / "model.safetensors") == sha256(folders[name] / "model.safetensors")
        assert {p.name for p in kept.iterdir() if p.is_file()} == {p.name for p in folders[name].iterdir()}
    assert not (out / "weights" / "step6").exists()

    for bad in (["--all", "--every", "2"], ["--revisions", "step0", "--all"]):
        with pytest.raises(SystemExit):
            grokcopy_main(["series", repo_id, *bad, "--out", str(out)])


def test_named_revision_outside_the_patterns_gets_its_step_from_trainer_state(api, series_repo, tmp_path):
    repo_id, folders = series_repo
    [record] = analyze_series(repo_id, revisions=["final"], out_dir=tmp_path / "final",
                              copy=CopyTaskConfig(num_samples=4), tokens_per_step=10, progress=False, device="cpu")
    assert record["revision"] == "final" and record["step"] == 8
    assert (record["tokens"], record["tokens_source"]) == (8000, "trainer_state.json")
    assert record["weights_sha256"] == [sha256(folders["final"] / "model.safetensors")]


def test_clear_errors(api, series_repo, tmp_path, capsys):
    repo_id, folders = series_repo
    out = tmp_path / "errors"
    with pytest.raises(SeriesError, match=r"user/no-such-repo: no such model repository"):
        analyze_series("user/no-such-repo", out_dir=out, progress=False, device="cpu")
    with pytest.raises(SeriesError, match=rf"{repo_id}: revision 'step3' does not exist \(branches: step0, step2"):
        analyze_series(repo_id, revisions="step0,step3", out_dir=out, progress=False, device="cpu")
    empty = api.create_repo(f"empty-{uuid.uuid4().hex[:8]}").repo_id
    with pytest.raises(SeriesError, match=rf"{empty}: no branch or tag is named like a checkpoint.*branches: main"):
        analyze_series(empty, out_dir=out, progress=False, device="cpu")

    # A branch without weights is found while listing, before anything is downloaded or analysed.
    broken = api.create_repo(f"broken-{uuid.uuid4().hex[:8]}").repo_id
    push(api, broken, "step0", folders["step0"])
    no_weights = tmp_path / "no_weights"
    shutil.copytree(folders["step2"], no_weights, ignore=shutil.ignore_patterns("*.safetensors"))
    push(api, broken, "step1", no_weights)
    with pytest.raises(SeriesError, match=rf"{broken}@step1: no model weights"):
        analyze_series(broken, out_dir=out / "broken", progress=False, device="cpu")
    assert not (out / "broken" / "series.json").exists()

    with pytest.raises(SeriesError, match=rf"{repo_id}: no revisions given"):
        analyze_series(repo_id, revisions=" , ", out_dir=out, progress=False, device="cpu")
    other = tmp_path / "other"
    other.mkdir()
    (other / "series.json").write_text(json.dumps({"repo_id": "someone/else", "records": []}))
    with pytest.raises(SeriesError, match="holds the series of 'someone/else'"):
        analyze_series(repo_id, out_dir=other, progress=False, device="cpu")

    with pytest.raises(SystemExit) as exit_info:
        grokcopy_main(["series", "user/no-such-repo", "--out", str(out), "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("grokcopy: error: user/no-such-repo: no such model repository") and err.count("\n") == 1


def test_truncated_checkpoint_is_reported_and_the_series_goes_on(api, series_repo, tmp_path, capsys):
    repo_id, folders = series_repo
    repo = api.create_repo(f"torn-{uuid.uuid4().hex[:8]}").repo_id
    push(api, repo, "step0", folders["step0"])
    torn = shutil.copytree(folders["step2"], tmp_path / "torn")
    weights = torn / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # an upload cut off halfway
    push(api, repo, "step2", torn)
    push(api, repo, "step4", folders["step4"])

    out = tmp_path / "out"
    argv = ["series", repo, "--out", str(out), "--no-progress", "--copy-samples", str(SAMPLES)]
    assert grokcopy_main(argv) == 1
    captured = capsys.readouterr()
    assert f"{repo}@step2: corrupt checkpoint: model.safetensors is truncated" in captured.out
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("grokcopy: error: 1 revision(s) could not be analysed (step2)")
    records = {r["revision"]: r for r in json.loads((out / "series.json").read_text())["records"]}
    assert records["step0"]["exact_match"] is not None and records["step4"]["exact_match"] is not None
    assert "truncated" in records["step2"]["error"] and records["step2"]["exact_match"] is None
    assert not (out / "weights").exists()  # the broken download is not kept for a retry to trust
    # once the branch is fixed, a rerun analyses only it
    api.upload_folder(folder_path=folders["step2"], repo_id=repo, revision="step2", commit_message="fixed")
    assert grokcopy_main(argv) == 0
    records = {r["revision"]: r for r in json.loads((out / "series.json").read_text())["records"]}
    assert records["step2"]["exact_match"] is not None and "error" not in records["step2"]


def test_cli_sets_the_copy_tests_shape(api, series_repo, tmp_path):
    """series takes the copy test's shape like copy-test does; a record made with another shape is redone."""
    repo_id, folders = series_repo
    out = tmp_path / "shape"
    argv = ["series", repo_id, "--revisions", "step4", "--out", str(out), "--copy-samples", "4", "--no-progress",
            "--device", "cpu", "--num-sequences", "6", "--prefix-length", "3", "--suffix-length", "2",
            "--query-stride", "2"]
    assert grokcopy_main(argv) == 0
    [record] = json.loads((out / "series.json").read_text())["records"]
    shape = {k: record["settings"][f"copy_{k}"] for k in ("num_sequences", "prefix_length", "suffix_length",
                                                             "query_stride")}
    assert shape == {"num_sequences": 6, "prefix_length": 3, "query_stride": 2, "suffix_length": 2}
    assert record["copy"]["num_sequences"] == 6 and sorted(record["copy"]["per_position"]) == ["2", "4", "6"]
    assert grokcopy_main(argv[:-2]) == 0  # the paper's stride again: another measurement, analysed anew
    [again] = json.loads((out / "series.json").read_text())["records"]
    assert again["settings"]["copy_query_stride"] is None  # unset: the paper's, fitted
    assert sorted(again["copy"]["per_position"]) == ["5"]
