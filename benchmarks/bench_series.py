"""Seconds per revision of `grokcopy series`, excluding the download, for the paper's 162M shape.

Random-init checkpoints of `paper-162m` (LLaMA 12 x 768, 1,024 context, untied embeddings, a 32,000-token
BPE vocabulary trained on random words) are pushed as branches to the project's local Hub server
(tests/hub_server.py); `analyze_series` analyses them with 100 copy-test samples (--copy-samples; the
series' own default is 500, as a training run's) and induction on 100 repeated tokens. Each record's
`seconds_without_download` is what a revision costs once its files are on disk: load (from_pretrained in
--dtype), move to --device, sample the parameters for the continuity distances, copy test, induction
analysis. One extra revision is timed by parts.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_series.py [--revisions 2] [--copy-samples 100]
    # on a GPU node (bf16, the default there):
    .venv/bin/python benchmarks/bench_series.py --device cuda --dtype bfloat16 --revisions 4
    .venv/bin/python benchmarks/bench_series.py --smoke   # CI: the `tiny` preset, 1 revision, 4 samples

JSON: machine, model, device, dtype, copy_samples, batch_size, peak_rss_mb, vocab_size, revisions,
seconds_without_download (one per revision), series_wall_seconds, one_revision_by_parts.
"""

import argparse
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from hub_server import HubServer, configure_client_env, free_port  # noqa: E402

PORT = free_port()
configure_client_env(PORT)
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="bench_hf_")

import torch  # noqa: E402
from common import add_common_arguments, finish, machine  # noqa: E402

from grokcopy.copytest.task import CopyTaskConfig  # noqa: E402
from grokcopy.hub.series import analyze_series  # noqa: E402
from grokcopy.training.data import train_tokenizer  # noqa: E402
from grokcopy.training.modeling import PRESETS  # noqa: E402


def random_words_tokenizer(vocab_size: int):
    rng = random.Random(0)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(400_000)]
    lines = [" ".join(words[i:i + 20]) + "\n" for i in range(0, len(words), 20)]
    return train_tokenizer(lines, kind="bpe", vocab_size=vocab_size)


def push_revisions(root: Path, n: int, vocab_size: int, tokenizer, preset_name: str = "paper-162m") -> str:
    from huggingface_hub import HfApi
    from transformers import LlamaConfig, LlamaForCausalLM

    preset = {k: v for k, v in PRESETS[preset_name].items() if k != "model_type"}
    config = LlamaConfig(vocab_size=vocab_size, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **preset)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    api = HfApi()
    repo = api.create_repo(f"bench/{preset_name}-{uuid.uuid4().hex[:6]}").repo_id
    for step in range(n):
        with torch.no_grad():  # a little training-like movement between revisions
            for p in model.parameters():
                p.add_(torch.randn_like(p), alpha=1e-3)
        folder = root / f"step{step}"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        api.create_branch(repo, branch=f"step{step}")
        api.upload_folder(folder_path=folder, repo_id=repo, revision=f"step{step}", commit_message=f"step{step}")
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, {n} revisions pushed", flush=True)
    return repo, root / "step0"


def time_parts(folder: Path, dtype: str, device: str, copy_samples: int, batch_size: int) -> dict:
    """One revision from disk, by parts (the same calls the runner makes)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grokcopy.analysis.architectures import model_context_length
    from grokcopy.analysis.induction import analyze_induction
    from grokcopy.copytest.scoring import score_copy_task
    from grokcopy.copytest.task import build_copy_task
    from grokcopy.hub.continuity import sample_parameters
    from grokcopy.hub.runner import torch_dtype

    parts, start = {}, time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype(dtype)).to(device)
    parts["load"] = time.perf_counter() - start
    start = time.perf_counter()
    sample_parameters(model)
    parts["parameter samples"] = time.perf_counter() - start
    tokenizer = AutoTokenizer.from_pretrained(folder)
    start = time.perf_counter()
    task = build_copy_task(tokenizer, CopyTaskConfig(num_samples=copy_samples), max_length=model_context_length(model))
    parts["copy task (built once per series)"] = time.perf_counter() - start
    start = time.perf_counter()
    score_copy_task(model, task, batch_size=batch_size)
    parts[f"copy test ({copy_samples} samples)"] = time.perf_counter() - start
    start = time.perf_counter()
    analyze_induction(model, seq_len=100, with_bos=True)
    parts["induction (A, EP, I, ...)"] = time.perf_counter() - start
    return {k: round(v, 2) for k, v in parts.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--revisions", type=int, default=2)
    parser.add_argument("--copy-samples", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=2, help="copy-test samples per forward: each one's KV "
                        "cache is repeated for its 10 queries (162M, 1,024 tokens, fp32: ~71 MB x 10 per sample)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--vocab-size", type=int, default=32000)
    add_common_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preset = "tiny" if args.smoke else "paper-162m"
    if args.smoke:
        args.revisions, args.copy_samples, args.vocab_size = 1, 4, 512

    server = HubServer(Path(tempfile.mkdtemp(prefix="bench_hub_")), port=PORT)
    server.start()
    try:
        root = Path(tempfile.mkdtemp(prefix="bench_series_"))
        tokenizer = random_words_tokenizer(args.vocab_size)
        repo, first = push_revisions(root, args.revisions, len(tokenizer), tokenizer, preset)
        start = time.perf_counter()
        records = analyze_series(repo, out_dir=root / "series", copy=CopyTaskConfig(num_samples=args.copy_samples),
                                 device=args.device, dtype=args.dtype, batch_size=args.batch_size, progress=False)
        wall = time.perf_counter() - start
        parts = time_parts(first, args.dtype, args.device, args.copy_samples, args.batch_size)
    finally:
        server.stop()
    per_revision = [r["seconds_without_download"] for r in records]
    import resource

    result = {"machine": machine(), "model": preset, "device": args.device, "dtype": args.dtype, "copy_samples": args.copy_samples,
              "batch_size": args.batch_size,
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
              "vocab_size": len(tokenizer), "revisions": len(records),
              "seconds_without_download": per_revision, "series_wall_seconds": round(wall, 1),
              "one_revision_by_parts": parts}
    finish(result, args.json)


if __name__ == "__main__":
    main()
