from pathlib import Path

from setuptools import find_packages, setup


def data_files(folder):
    """Ship metrics/, trainer_configs/ and model_cards/ beside the package (share/grokcopy/...)."""
    groups = {}
    for path in Path(folder).rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            groups.setdefault(str(Path("share/grokcopy") / path.parent), []).append(str(path))
    return sorted(groups.items())


setup(
    name="grokcopy",
    version="0.1.0",
    description="Pretrain causal LMs with transformers.Trainer and watch them grok to copy (Lv et al., 2025).",
    long_description=Path("README.md").read_text() if Path("README.md").exists() else "",
    long_description_content_type="text/markdown",
    package_dir={"": "src"},
    packages=find_packages("src"),
    data_files=data_files("metrics") + data_files("trainer_configs") + data_files("model_cards"),
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
        "tqdm",
    ],
    extras_require={"dev": ["pytest>=8", "tensorboard", "starlette", "uvicorn"]},
    entry_points={"console_scripts": ["grokcopy=grokcopy.cli:main"]},
)
