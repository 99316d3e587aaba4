from pathlib import Path

from setuptools import find_packages, setup


# The design card's top-level folders ship inside the package as grokcopy.metrics,
# grokcopy.trainer_configs and grokcopy.model_cards (each has an __init__.py for that), so
# `grokcopy.resources` finds them with importlib.resources in an editable install and a wheel alike.
RESOURCES = {f"grokcopy.{folder}": folder for folder in ("metrics", "trainer_configs", "model_cards")}


setup(
    name="grokcopy",
    version="0.1.0",
    description="Pretrain causal LMs with transformers.Trainer and watch them grok to copy (Lv et al., 2025).",
    long_description=Path("README.md").read_text() if Path("README.md").exists() else "",
    long_description_content_type="text/markdown",
    package_dir={"": "src", **RESOURCES},
    packages=find_packages("src") + list(RESOURCES),
    package_data={**{name: ["**/*"] for name in RESOURCES}, "grokcopy.forecast": ["reference_runs.json"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "transformers>=5.0,<6",
        "datasets>=3.0",
        "evaluate>=0.4.3",
        "accelerate>=1.0",
        "huggingface_hub>=1.0",
        "peft>=0.15",
        "tokenizers>=0.21",
        "jinja2",
        "matplotlib",
        "numpy",
        "pyyaml",
        "scipy",
        "tqdm",
    ],
    extras_require={"dev": ["pytest>=8", "tensorboard", "starlette", "uvicorn", "trl>=1.0"]},
    entry_points={"console_scripts": ["grokcopy=grokcopy.cli:main"]},
)
