"""mailpulse: what happened to the mail we sent?

One distribution, one package (``pipelines``), one console script (``mailpulse``).
The same file is the ``--setup_file`` a Dataflow job ships to its workers, so the
core dependencies below are exactly what the load job needs at run time.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
#: The version lives in one place: pipelines/__init__.py (read here without importing
#: the package, whose dependencies may not be installed yet).
VERSION = re.search(
    r'^__version__ = "([^"]+)"',
    (HERE / "pipelines" / "__init__.py").read_text(encoding="utf-8"),
    re.M,
).group(1)

CORE = [
    # Beam pins pyarrow<26, numpy<2.5, protobuf<7 itself; pandas 3 breaks
    # apache_beam.dataframe on import (PLATFORM-NOTES), so pandas stays < 3.
    "apache-beam[gcp,aws]==2.77.0",  # aws: boto3 for s3:// archives and SQS
    "duckdb==2.0.0",
    "sqlglot>=30.12,<31",
    "pandas>=2.2,<3",
    "pyarrow>=17,<26",
    "numpy<2.5",
    "orjson>=3.10",
    "zlib-ng>=0.5",  # gunzip of archive files, about twice zlib's speed (pipelines/records.py)
    "pyyaml>=6",
    "google-cloud-bigquery>=3.30",
    "db-dtypes>=1.2",
    "slack-sdk>=3.30",
    "flask>=3.0",
    "gunicorn>=22",
    "h11>=0.16",  # the collector worker's HTTP/1.1 parser (pipelines/collector/worker.py)
    "cryptography>=42",
    # Launching a Dataflow job with --setup_file stages this package as an sdist, which
    # Beam builds with `python -m build --no-isolation` (offline); without it Beam falls
    # back to the deprecated `setup.py sdist`.
    "build>=1.2",
]

EXTRAS = {
    # Airflow 3.3.2 resolves together with apache-beam[gcp] 2.77 in one environment.
    "airflow": ["apache-airflow==3.3.2"],
    # jupyterlab: the README's `jupyter lab notebooks/`; nbclient/ipykernel run them headless
    "notebooks": [
        "jupyterlab>=4.2",
        "nbclient>=0.10",
        "nbformat>=5.9",
        "ipykernel>=6.29",
        "matplotlib>=3.8",
    ],
}
EXTRAS["test"] = (
    [
        "pytest>=8",
        # the suite runs on every core (scripts/test.sh): most slow tests wait on real
        # servers and subprocesses
        "pytest-xdist>=3.6",
        "hypothesis>=6.100",
        # real S3 + SQS and GCS servers on loopback, started by tests/storage_servers.py
        "moto[server]==5.2.5",
        "gcp-storage-emulator>=2024.8",
        # the linter and formatter CI runs (pyproject.toml)
        "ruff==0.17.6",
    ]
    + EXTRAS["airflow"]
    + EXTRAS["notebooks"]
)

setup(
    name="mailpulse",
    version=VERSION,
    description="Email delivery analytics: provider events -> Beam -> warehouse -> outcomes",
    long_description=(
        (HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else ""
    ),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["pipelines", "pipelines.*"]),
    # the mailbox-provider mapping (pipelines/mailbox.py)
    package_data={"pipelines": ["data/*.csv"]},
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["mailpulse = pipelines.cli:entry"]},
)
