"""luminet-det: LumiNet distillation for Detectron2 Faster R-CNN FPN and torchvision classifiers.

detectron2 is not on PyPI under its own name, so it is not listed in ``install_requires``;
``scripts/setup.sh`` (behind ``make demo`` / ``make test``) installs it. See README.md.
"""

from setuptools import find_packages, setup

setup(
    name="luminet-det",
    version="0.1.0",
    description="LumiNet (perception-normalized logit distillation) for Detectron2 and torchvision",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["luminet_det", "luminet_det.*"]),
    install_requires=["torch", "torchvision", "fvcore", "pycocotools", "numpy"],
    extras_require={"dev": ["pytest", "scikit-learn", "matplotlib"]},
    entry_points={"console_scripts": []},
)
