"""The rules that find broken branches of a real series, on synthetic listings and weights: duplicates and
suspects from sha256s (suspects.py), discontinuities from parameter distances (continuity.py), and the
revision lists published outside the refs."""

import pytest
import torch

from grokcopy.errors import SeriesError
from grokcopy.hub.continuity import discontinuities, group_distances, sample_parameters, tensor_group
from grokcopy.hub.listing import checkpoint_refs
from grokcopy.hub.revisions import read_revisions_file
from grokcopy.hub.suspects import classify

BIN = "pytorch_model.bin"
SHARDS = ("pytorch_model-00001-of-00003.bin", "pytorch_model-00002-of-00003.bin", "pytorch_model-00003-of-00003.bin")


def own(step):
    return {BIN: f"sha-{step}"}


def sharded(tag):
    return {f: f"{tag}-{i}" for i, f in enumerate(SHARDS)}


def test_the_final_models_weights_under_early_names_are_suspect_and_owned_by_the_last_step():
    # EleutherAI/pythia#205: step0 and the early grid serve main's weights; the last step owns them.
    order = ["step0", "step1", "step2", "step1000", "step2000", "step3000"]
    final = own("final")
    shards = {"step0": final, "step1": final, "step2": final, "step1000": own(1000), "step2000": own(2000),
              "step3000": final}
    verdicts = classify(order, shards, final)
    for name in ("step0", "step1", "step2"):
        assert verdicts[name]["duplicate_of"] == "step3000"
        assert "final model's weights" in verdicts[name]["suspect"]
    assert verdicts["step3000"] == {"duplicate_of": None, "suspect": None}
    assert verdicts["step1000"] == verdicts["step2000"] == {"duplicate_of": None, "suspect": None}


def test_one_shard_of_the_final_model_makes_a_branch_suspect_but_it_is_still_analysed():
    # pythia#206: step50000 and step58000 serve the final model's first shard; the fingerprint differs.
    order = ["step49000", "step50000", "step58000", "step143000"]
    final = sharded("final")
    shards = {"step49000": sharded("a"), "step50000": {**sharded("b"), SHARDS[0]: "final-0"},
              "step58000": {**sharded("c"), SHARDS[0]: "final-0"}, "step143000": final}
    verdicts = classify(order, shards, final)
    for name in ("step50000", "step58000"):
        assert verdicts[name]["duplicate_of"] is None
        assert verdicts[name]["suspect"] == f"shard {SHARDS[0]} equals the final model's (main's sha256); the rest differ"
    assert verdicts["step49000"]["suspect"] is None and verdicts["step143000"]["suspect"] is None


def test_plain_duplicates_keep_the_earliest_owner_and_weights_that_go_back_are_suspect():
    # pythia#83 (step0 == step1), pythia#195 (steps 0-6300 identical), OLMo#915: plain duplicates.
    order = ["step0", "step1", "step2", "step4", "step8", "step16"]
    shards = {"step0": own(0), "step1": own(0), "step2": own(0), "step4": own(4), "step8": own(0), "step16": own(16)}
    verdicts = classify(order, shards, own(16))
    assert verdicts["step1"] == verdicts["step2"] == {"duplicate_of": "step0", "suspect": None}
    assert verdicts["step8"]["duplicate_of"] == "step0"
    assert verdicts["step8"]["suspect"] == "holds the weights of step0 though step4 between them differ"
    # A shard shared with a later (non-final) checkpoint: the earlier one holds a file that is not its own.
    shards = {"step0": sharded("a"), "step1": {**sharded("b"), SHARDS[2]: "c-2"}, "step2": sharded("c")}
    verdicts = classify(["step0", "step1", "step2"], shards, None)
    assert verdicts["step1"]["suspect"] == f"shard {SHARDS[2]} equals step2's (a later checkpoint); the rest differ"
    assert verdicts["step0"]["suspect"] is None and verdicts["step2"]["suspect"] is None


def walk(n_steps, drift=0.05, noise=0.001, seed=0):
    """Per-step weights of a smooth run: a fixed direction plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    start = {f"model.layers.{k}.w": torch.randn(400, generator=g) for k in range(2)}
    start["model.embed_tokens.weight"] = torch.randn(400, generator=g)
    direction = {k: torch.randn(400, generator=g) for k in start}
    return [{k: v + drift * s * direction[k] + noise * torch.randn(400, generator=g) for k, v in start.items()}
            for s in range(n_steps)]


def test_a_smooth_run_has_no_discontinuity_but_a_shard_of_the_final_model_and_a_foreign_start_do():
    weights = walk(8)
    names = [f"step{s}" for s in range(8)]
    by_name = dict(zip(names, weights))

    def distance(a, b):
        return group_distances(by_name[a], by_name[b])

    assert discontinuities(names, distance) == {}
    # pythia#206: step3 holds the final model's embedding
    by_name["step3"] = {**weights[3], "model.embed_tokens.weight": weights[7]["model.embed_tokens.weight"]}
    flags = discontinuities(names, distance)
    assert list(flags) == ["step3"] and flags["step3"][0].startswith("embeddings: off the path")
    # step5 holds step4's weights in another format (hashes differ): flagged, and step6 is no jump for it
    by_name["step5"] = weights[4]
    flags = discontinuities(names, distance)
    assert flags["step5"] == ["all groups: the same weights as step4 (every sampled value equal) though the files "
                              "differ"] and "step6" not in flags
    # pythia#203: step1 on do not descend from step0 (another initialisation)
    by_name = dict(zip(names, walk(8, seed=1)))
    by_name["step0"] = walk(8, seed=2)[0]
    flags = discontinuities(names, distance)
    assert list(flags) == ["step1"]
    assert {f.split(":")[0] for f in flags["step1"]} == {"embeddings", "layer.0", "layer.1"}
    assert all("does not descend from step0" in f for f in flags["step1"])


def test_tensor_groups_and_samples_are_the_same_positions_for_every_revision():
    assert tensor_group("gpt_neox.embed_in.weight") == "embeddings"
    assert tensor_group("model.embed_tokens.weight") == "embeddings"
    assert tensor_group("gpt_neox.layers.3.attention.query_key_value.weight") == "layer.3"
    assert tensor_group("transformer.h.11.mlp.c_fc.weight") == "layer.11"
    assert tensor_group("embed_out.weight") == tensor_group("lm_head.weight") == "unembedding"
    assert tensor_group("gpt_neox.final_layer_norm.weight") == "other"
    big, small = torch.nn.Linear(100, 100), torch.nn.Linear(2, 2)
    a, b = sample_parameters(big, per_tensor=64), sample_parameters(big, per_tensor=64)
    assert a["weight"].shape == (64,) and torch.equal(a["weight"], b["weight"])
    assert torch.equal(sample_parameters(small)["weight"], small.weight.detach().reshape(-1))  # small: exact
    with torch.no_grad():
        small.weight.mul_(2.0)
    before = {"weight": small.weight.detach().reshape(-1) / 2}
    assert group_distances(before, {"weight": small.weight.detach().reshape(-1)}) == {"other": pytest.approx(0.632456, abs=1e-5)}


def test_revisions_file_plain_or_csv(tmp_path):
    plain = tmp_path / "revisions.txt"
    plain.write_text("# OLMo style\nstep1000-tokens4B\n\nstep2000-tokens8B\n")
    assert read_revisions_file(plain) == ["step1000-tokens4B", "step2000-tokens8B"]
    table = tmp_path / "checkpoints.csv"
    table.write_text("Step,Revision,Tokens\n1000,step1000-tokens4B,4B\n2000,step2000-tokens8B,8B\n")
    assert read_revisions_file(table) == ["step1000-tokens4B", "step2000-tokens8B"]
    bad = tmp_path / "bad.csv"
    bad.write_text("step,url\n1000,https://example.org/step1000\n")
    with pytest.raises(SeriesError, match=r"bad.csv: a CSV needs a 'revision' column \(columns: step, url\)"):
        read_revisions_file(bad)
    with pytest.raises(SeriesError, match=r"missing.txt: cannot be read"):
        read_revisions_file(tmp_path / "missing.txt")


def test_checkpoint_tags_count_as_revisions_and_a_branch_wins_a_shared_name():
    branches = {"main": "a" * 40, "step10": "b" * 40, "stage1-step20-tokens84B": "c" * 40}
    tags = {"step10": "d" * 40, "checkpoint-30": "e" * 40, "v1.0": "f" * 40}
    assert checkpoint_refs(branches, tags) == {"step10": "b" * 40, "stage1-step20-tokens84B": "c" * 40,
                                               "checkpoint-30": "e" * 40}
