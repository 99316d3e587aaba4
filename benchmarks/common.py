"""What every benchmark shares: the machine it ran on, its JSON, smoke mode and the demo's run.

Every benchmark takes `--smoke` (a couple of steps at tiny sizes: it checks the script still runs on
the code as it is, and tests/test_benchmarks.py runs each one so in CI) and `--json PATH` (its result
as one JSON object, with the fields its docstring lists).
"""

import json
import os
import platform
from pathlib import Path

# A demo corpus of 4,000 documents instead of 400,000: the same alphabet (every symbol appears), made in
# a second, so a smoke run does not generate the whole corpus.
SMOKE_DEMO_CORPUS = ('{"identifier_share": 0.5, "prose_symbols": 20, "prose_certainty": 1.0, '
                     '"prose_single_cycle": true, "num_documents": 4000}')


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> dict:
    """Device, threads and library versions, for benchmarks/RESULTS.md."""
    import torch
    import transformers

    cuda = torch.cuda.is_available()
    return {"device": torch.cuda.get_device_name() if cuda else cpu_name(), "threads": torch.get_num_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "load_average": _load_average(),
            "torch": torch.__version__, "transformers": transformers.__version__}


def _load_average():
    try:
        return [round(x, 2) for x in os.getloadavg()]  # other processes on the machine while it ran
    except OSError:
        return None


def add_common_arguments(parser, threads: int = 2):
    parser.add_argument("--smoke", action="store_true", help="a couple of steps at tiny sizes (CI)")
    parser.add_argument("--threads", type=int, default=threads, help="torch.set_num_threads")
    parser.add_argument("--json", help="write the result here as one JSON object")


def finish(result: dict, json_path: str | None) -> dict:
    """Print the result and write it whole to `json_path`."""
    text = json.dumps(result, indent=1)
    print(text)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(text + "\n")
    return result


def demo_trainer(output_dir: str, overrides: list[str], smoke: bool = False):
    """The demo as `grokcopy demo` builds it (trainer_configs/demo.yaml), with `overrides`; smoke: a small corpus."""
    from grokcopy.experiments.demo import demo_config_path
    from grokcopy.training.config import parse_args
    from grokcopy.training.pipeline import build_trainer

    small = ["--demo_corpus_config", SMOKE_DEMO_CORPUS] if smoke else []
    args = parse_args(demo_config_path(), ["--output_dir", output_dir, "--disable_tqdm", "true", *small, *overrides])
    return build_trainer(*args)
