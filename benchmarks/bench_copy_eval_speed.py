"""How fast is the copy test? Four ways of scoring the paper's copy task, timed and checked against each other.

The task has the paper's shape (Lv et al. 2025, Fig. 1): per sample 50 sequences of a 12-token prefix +
6-token suffix + newline (a ~950-token context) and 10 queries (i = 5, 10, ..., 50); 500 samples in the
paper (`--samples`; the projected time for 500 is printed too). Scored four ways, `--batch_size`
samples per call in each:

  (i)   packed:   grokcopy.copytest.scoring.score_copy_task: the contexts once (causal, KV cache kept), then
                  all queries of a sample (prefix + suffix, teacher-forced) in one row on that cache under
                  a 4-D mask (what CopyTrainer runs);
  (ii)  kv_cache: the previous grokcopy scoring, kept here as the baseline: each context run once, its KV
                  cache repeated for its queries (a copy per query), logits at every position;
  (iii) full:     one full forward per query (context + prefix + suffix, teacher-forced), logits kept
                  for the suffix positions only;
  (iv)  generate: model.generate(context + prefix, do_sample=False, max_new_tokens=suffix length).

(ii)-(iv) get their exact match from the same evaluate metric as (i). Agreement is checked per query:
the same exact match as (i); (ii) and (iii) the same argmax as (i) at every suffix position; (iv)
the same tokens as (i) up to and including (i)'s first wrong one (greedy decoding follows the
teacher-forced argmax until its first error). `--methods` picks which of (ii)-(iv) run besides (i). `--profile`: where the time of (i) and (ii) goes, the
top operators of one batch by self time (torch.profiler). A random-init model (the default) copies nothing, so its
exact match is 0 everywhere and the token checks are what compare the methods; `--model_name_or_path`
scores a trained model instead. Each method runs its first batch once untimed (warm-up).

Model: CPU a 2-layer LLaMA (d=128, 4 heads, MLP 512, context 1024) with a 256-symbol char tokenizer
(`--model mid`: bench_train.py's mid shape, 4 x 256, context 256: 12 sequences fit);
CUDA the paper's 162M LLaMA (`paper-162m` preset, 32,000 symbols). torch.inference_mode throughout;
`--bf16` runs the model in bfloat16.

    .venv/bin/python benchmarks/bench_copy_eval_speed.py                      # CPU: 50 samples, 2 threads
    .venv/bin/python benchmarks/bench_copy_eval_speed.py --bf16               # CUDA: 500 samples, paper-162m
    .venv/bin/python benchmarks/bench_copy_eval_speed.py --smoke              # CI: 2 samples of the small model

JSON: machine, model, params, dtype, samples, batch_size, queries_per_sample, tokens_per_sample,
seconds, projected_500_samples_s, s_per_sample (each {packed, kv_cache, full, generate}),
speedup_packed_over_kv_cache, exact_match, agreement, all_agree, profile (with --profile).
"""

import argparse
import time

import torch
import transformers
from common import add_common_arguments, finish, machine
from transformers import AutoModelForCausalLM, AutoTokenizer

from grokcopy.analysis.architectures import model_context_length
from grokcopy.copytest.scoring import load_copy_metric, predict_suffixes, score_copy_task
from grokcopy.copytest.task import CopyTask, CopyTaskConfig, build_copy_task
from grokcopy.training.config import ModelArguments
from grokcopy.training.data import train_tokenizer
from grokcopy.training.modeling import build_model

SMALL = dict(model_type="llama", num_hidden_layers=2, hidden_size=128, num_attention_heads=4, num_key_value_heads=4,
             intermediate_size=512, max_position_embeddings=1024, tie_word_embeddings=False)
MID = dict(SMALL, num_hidden_layers=4, hidden_size=256, intermediate_size=1024, max_position_embeddings=256)
MODELS = {"small": (SMALL, 256), "mid": (MID, 512), "paper-162m": (dict(preset="paper-162m"), 32000)}
METHODS = ("kv_cache", "full", "generate")


def load(ns, device):
    if ns.model_name_or_path:
        tokenizer = AutoTokenizer.from_pretrained(ns.model_name_or_path)
        model = AutoModelForCausalLM.from_pretrained(ns.model_name_or_path)
    else:
        shape, vocab = MODELS[ns.model]
        # A char tokenizer of exactly `vocab` tokens: 4 specials, the newline, CJK-block symbols.
        tokenizer = train_tokenizer(["".join(chr(0x4E00 + i) for i in range(vocab - 5))], kind="char")
        torch.manual_seed(ns.seed)
        model = build_model(ModelArguments(**shape), tokenizer)
    model.generation_config.eos_token_id = None  # always generate the full suffix length
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    dtype = torch.bfloat16 if ns.bf16 else torch.float32
    return tokenizer, model.to(device=device, dtype=dtype).eval()


def batches(task, batch_size):
    for start in range(0, len(task.samples), batch_size):
        yield task.samples[start:start + batch_size]


def query_rows(samples, device, with_suffix):
    """One row per query: context + prefix (+ suffix). With `tokens` symbols every row has the same length."""
    rows = [s.context + p + (q if with_suffix else []) for s in samples for _, p, q in s.queries]
    if len({len(r) for r in rows}) != 1:
        raise SystemExit("rows of unequal length (hex symbols?): this benchmark needs `tokens` symbols")
    return torch.tensor(rows, dtype=torch.long, device=device)


@torch.inference_mode()
def predict_kv_cache(model, samples, device):
    """(ii) the previous scoring: contexts once, the KV cache repeated per query, then prefix + suffix."""
    contexts = torch.tensor([s.context for s in samples], dtype=torch.long, device=device)
    cache = model(input_ids=contexts, use_cache=True).cache
    cache.batch_repeat_interleave(len(samples[0].queries))
    queries = torch.tensor([p + q for s in samples for _, p, q in s.queries], dtype=torch.long, device=device)
    argmax = model(input_ids=queries, cache=cache, use_cache=True).logits.argmax(-1)
    n_prefix, n_suffix = len(samples[0].queries[0][1]), len(samples[0].queries[0][2])
    return argmax[:, n_prefix - 1:n_prefix - 1 + n_suffix].tolist()


@torch.inference_mode()
def predict_packed(model, samples, device):
    """(i) grokcopy's scoring (for the profile: predictions of one batch)."""
    task = CopyTask(CopyTaskConfig(), samples, 0, [])
    return [p for _, p, _ in predict_suffixes(model, task, batch_size=len(samples))]


@torch.inference_mode()
def predict_full(model, samples, device):
    """(ii) teacher-forced argmax at the suffix positions, one full forward per query."""
    n = len(samples[0].queries[0][2])
    logits = model(input_ids=query_rows(samples, device, True), use_cache=False, logits_to_keep=n + 1).logits
    return logits[:, :n].argmax(-1).tolist()


@torch.inference_mode()
def predict_generate(model, samples, device):
    """(iii) greedy decoding of suffix-length tokens after context + prefix."""
    n = len(samples[0].queries[0][2])
    x = query_rows(samples, device, False)
    out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=n)
    return out[:, x.shape[1]:].tolist()


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    value = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return value, time.perf_counter() - start


def run_per_batch(predict, model, task, ns, device):
    """Predictions for every query in sample order, and the scoring time including the metric."""
    metric = load_copy_metric()
    predict(model, task.samples[:ns.batch_size], device)  # warm-up

    def run():
        preds = [p for samples in batches(task, ns.batch_size) for p in predict(model, samples, device)]
        refs = [q for s in task.samples for _, _, q in s.queries]
        return preds, metric.compute(predictions=preds, references=refs)["exact_match"]

    (preds, em), seconds = timed(run, device)
    return preds, em, seconds


def agreement(preds, refs):
    """Per query, against (i): the same exact match; the same argmax at every suffix position for (ii) and
    (iii); for (iv) the same tokens up to and including (i)'s first wrong one."""
    packed, checks = preds["packed"], {"queries": len(refs)}
    for name, other in preds.items():
        if name == "packed":
            continue
        checks[f"{name}_exact_match_same"] = sum((p == r) == (o == r) for p, o, r in zip(packed, other, refs))
        if name != "generate":
            checks[f"{name}_same_tokens"] = sum(p == o for p, o in zip(packed, other))
            continue
        follows = 0
        for p, g, r in zip(packed, other, refs):
            first_wrong = next((j for j, (a, b) in enumerate(zip(p, r)) if a != b), len(r) - 1)
            follows += g[:first_wrong + 1] == p[:first_wrong + 1]
        checks["generate_follows_packed"] = follows
    return checks


def profile(model, task, ns, device):
    """Top operators by self time of one batch of (i) and of (ii): where the copy test's time goes."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    cuda = device.type == "cuda"
    self_time = (lambda e: e.self_device_time_total) if cuda else (lambda e: e.self_cpu_time_total)  # noqa: E731
    batch, out = task.samples[:ns.batch_size], {}
    for name, predict in (("packed", predict_packed), ("kv_cache", predict_kv_cache)):
        with torch_profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
            predict(model, batch, device)
        ops = sorted(prof.key_averages(), key=self_time, reverse=True)
        total = sum(map(self_time, ops)) or 1
        out[name] = {"total_ms": round(total / 1e3, 1), **{e.key: round(self_time(e) / total, 3) for e in ops[:6]}}
    return out


def main(argv=None):
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=500 if cuda else 50, help="paper: 500")
    parser.add_argument("--model", choices=MODELS, default="paper-162m" if cuda else "small")
    parser.add_argument("--model_name_or_path", help="a trained model (context >= 968 tokens) instead")
    parser.add_argument("--batch_size", type=int, default=16, help="samples per call (CopyTrainer's default 16)")
    parser.add_argument("--bf16", action="store_true", help="run the model in bfloat16")
    parser.add_argument("--profile", action="store_true", help="where the time of (i) and (ii) goes")
    parser.add_argument("--methods", default=",".join(METHODS), help="besides (i), which of " + ", ".join(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    add_common_arguments(parser)
    ns = parser.parse_args(argv)
    if ns.smoke:
        ns.samples, ns.batch_size = 2, 2
    torch.set_num_threads(ns.threads)
    transformers.logging.set_verbosity_error()
    device = torch.device("cuda" if cuda else "cpu")
    tokenizer, model = load(ns, device)
    task = build_copy_task(tokenizer, CopyTaskConfig(num_samples=ns.samples), max_length=model_context_length(model))
    if task.note:
        print(task.note)
    refs = [q for s in task.samples for _, _, q in s.queries]

    first = CopyTask(task.config, task.samples[:ns.batch_size], task.num_sequences, task.query_indices)
    score_copy_task(model, first, batch_size=ns.batch_size)  # warm-up
    scores, packed_s = timed(lambda: score_copy_task(model, task, batch_size=ns.batch_size), device)
    packed = [p for _, p, _ in predict_suffixes(model, task, batch_size=ns.batch_size)]  # untimed: for the checks
    preds, em, seconds = {"packed": packed}, {"packed": scores["exact_match"]}, {"packed": packed_s}
    predictors = {"kv_cache": predict_kv_cache, "full": predict_full, "generate": predict_generate}
    for name in ns.methods.split(","):
        preds[name], em[name], seconds[name] = run_per_batch(predictors[name], model, task, ns, device)

    checks = agreement(preds, refs)
    agree = all(v == checks["queries"] for k, v in checks.items() if k != "queries")
    result = {
        "machine": machine(), "model": ns.model_name_or_path or ns.model,
        "params": sum(p.numel() for p in model.parameters()), "dtype": str(next(model.parameters()).dtype),
        "samples": ns.samples, "batch_size": ns.batch_size, "queries_per_sample": len(task.query_indices),
        "tokens_per_sample": task.max_length,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "projected_500_samples_s": {k: round(v * 500 / ns.samples, 1) for k, v in seconds.items()},
        "s_per_sample": {k: round(v / ns.samples, 4) for k, v in seconds.items()},
        "speedup_packed_over_kv_cache": round(seconds["kv_cache"] / packed_s, 2) if "kv_cache" in seconds else None,
        "exact_match": em, "agreement": checks, "all_agree": agree,
    }
    if ns.profile:
        result["profile"] = profile(model, task, ns, device)
    finish(result, ns.json)
    print("\n" + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()) + f" for {ns.samples} samples; "
          f"packed over the KV-cache baseline: {result['speedup_packed_over_kv_cache']}x. Methods agree: {agree}")


if __name__ == "__main__":
    main()
