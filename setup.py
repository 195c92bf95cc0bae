"""mailpulse: what happened to the mail we sent?

One distribution, one package (``pipelines``), one console script (``mailpulse``).
The same file is the ``--setup_file`` a Dataflow job ships to its workers, so the
core dependencies below are exactly what the load job needs at run time.
"""
from setuptools import find_packages, setup

CORE = [
    # Beam pins pyarrow<26, numpy<2.5, protobuf<7 itself; pandas 3 breaks
    # apache_beam.dataframe on import (PLATFORM-NOTES), so pandas stays < 3.
    "apache-beam[gcp]==2.77.0",
    "duckdb==2.0.0",
    "sqlglot>=30.12,<31",
    "pandas>=2.2,<3",
    "pyarrow>=17,<26",
    "numpy<2.5",
    "orjson>=3.10",
    "pyyaml>=6",
    "google-cloud-bigquery>=3.30",
    "db-dtypes>=1.2",
    "slack-sdk>=3.30",
    "flask>=3.0",
    "gunicorn>=22",
    "cryptography>=42",
]

EXTRAS = {
    # Airflow 3.3.2 resolves together with apache-beam[gcp] 2.77 in one environment.
    "airflow": ["apache-airflow==3.3.2"],
    "notebooks": ["nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6.29", "matplotlib>=3.8"],
}
EXTRAS["test"] = (
    ["pytest>=8", "hypothesis>=6.100"] + EXTRAS["airflow"] + EXTRAS["notebooks"]
)

setup(
    name="mailpulse",
    version="0.1.0",
    description="Email delivery analytics: provider events -> Beam -> warehouse -> outcomes",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["pipelines", "pipelines.*"]),
    # the mailbox-provider mapping (pipelines/mailbox.py)
    package_data={"pipelines": ["data/*.csv"]},
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["mailpulse = pipelines.cli:main"]},
)
