"""luminet-det: LumiNet distillation for Detectron2 detectors and torchvision classifiers.

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
    # what the package imports at run time (detectron2 aside: see the module docstring);
    # scikit-learn supplies the built-in data sets, matplotlib the plots
    install_requires=[
        "torch",
        "torchvision",
        "numpy",
        "fvcore",
        "pycocotools",
        "Pillow",
        "matplotlib",
        "scikit-learn",
        "tqdm",
        "timm",
    ],
    extras_require={
        "dev": ["pytest", "pytest-xdist", "black", "isort", "build"],
        # luminet-export --format onnx
        "onnx": ["onnx", "onnxruntime"],
    },
    entry_points={
        "console_scripts": [
            "luminet-train=luminet_det.cli.train:cli",
            "luminet-lazy-train=luminet_det.cli.lazy_train:cli",
            "luminet-export=luminet_det.cli.export:main",
            "luminet-convert=luminet_det.cli.convert:main",
            "luminet-cls=luminet_det.cls.__main__:main",
            "luminet-cls-report=luminet_det.cli.cls_report:main",
            "luminet-plot=luminet_det.cli.plot:main",
            "luminet-perception=luminet_det.cli.perception:main",
        ]
    },
)
