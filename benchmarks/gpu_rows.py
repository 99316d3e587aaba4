"""gpu_check.sh's last step: its three results in one JSON and as rows for benchmarks/RESULTS.md.

    python benchmarks/gpu_rows.py OUT [SECONDS]
"""

import json
import sys
from pathlib import Path


def rows(check: dict) -> str:
    train, copy, proj = check["train"], check["copy_test"], check["projection"]
    card = check["nvidia_smi"].splitlines()[1] if len(check["nvidia_smi"].splitlines()) > 1 else "?"
    lines = [f"GPU check ({check['seconds']} s): {card}; torch {train['machine']['torch']}, "
             f"transformers {train['machine']['transformers']}; bf16 {train['machine']['bf16']}, "
             f"compile {train['machine']['compile']}, MFU against {train['machine']['peak_flops']:.3g} FLOP/s.", "",
             "| size | variant | tokens/s | s/step | peak MB | MFU |", "|---|---|---|---|---|---|"]
    for size in train["results"]:
        for name, v in size["variants"].items():
            lines.append(f"| {size['size']} ({size['params'] / 1e6:.1f}M, {size['batch']} x {size['block']}) | {name} | "
                         f"{v['tokens_per_s']:,.0f} | {v['s_per_step']:.4f} | {v['peak_mem_mb']:,.0f} | {v['mfu']:.1%} |")
        r = size["ratios"]
        lines.append(f"| | (c)/(b) | {r['copytrainer_over_trainer']['mean']:.3f} | (b)/(a) "
                     f"{r['trainer_over_bare']['mean']:.3f} | (c minus its copy tests)/(b) "
                     f"{r['copytrainer_minus_watching_over_trainer']['mean']:.3f} | |")
    lines += ["", "| copy test, {} samples x {} tokens ({}) | seconds | per sample |".format(
        copy["samples"], copy["tokens_per_sample"], copy["dtype"]), "|---|---|---|"]
    lines += [f"| {k} | {v:.2f} | {copy['s_per_sample'][k]:.4f} |" for k, v in copy["seconds"].items()]
    lines += [f"| all methods agree | {copy['all_agree']} | |", "",
              f"Projection (paper-162m.yaml, {proj['schedule']['max_steps']:,} steps, "
              f"{proj['schedule']['copy_tests']} copy tests x {proj['schedule']['samples_per_process']} samples per GPU, "
              f"{proj['schedule']['analyses']} analyses): train {proj['train_tokens_per_s']:,.0f} tokens/s, copy test "
              f"{proj['copy_test_s_per_sample']:.4f} s/sample (bf16 autocast), induction analysis "
              f"{proj['induction_s_per_call']:.2f} s/call -> watching share {proj['projected']['watching_share']:.3%}, "
              f"(c)/(b) = {proj['projected']['copytrainer_over_trainer']:.4f}."]
    return "\n".join(lines) + "\n"


def main(out: str, seconds: str = "?"):
    out = Path(out)
    check = {name: json.loads((out / f"{name}.json").read_text()) for name in ("train", "copy_test", "projection")}
    check.update(nvidia_smi=(out / "nvidia-smi.txt").read_text(), seconds=seconds)
    (out / "gpu_check.json").write_text(json.dumps(check, indent=1) + "\n")
    text = rows(check)
    (out / "gpu_check_rows.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main(*sys.argv[1:])
