"""Output helpers shared by `mailpulse outcomes`, `run` and the send view (no command
imports another through them)."""

from __future__ import annotations


def rows_for_json(df) -> list[dict]:
    """DataFrame rows as plain JSON values (dates ISO, NaN as null, numpy ints as int)."""
    import math
    from datetime import date

    out = []
    for rec in df.to_dict(orient="records"):
        row = {}
        for k, v in rec.items():
            if hasattr(v, "item"):  # numpy scalar
                v = v.item()
            if isinstance(v, float) and math.isnan(v):
                v = None
            elif v is not None and type(v).__name__ == "NaTType":  # before date: NaT is one
                v = None
            elif isinstance(v, date):
                v = v.isoformat()
            row[k] = v
        out.append(row)
    return out


def write_rows(df, fmt: str, out) -> bool:
    """A frame's rows as one JSON array (``json``) or CSV with a header (``csv``) on
    ``out``; False for any other format (the caller prints its table)."""
    import csv
    import json

    if fmt == "json":
        out.write(json.dumps(rows_for_json(df)) + "\n")
    elif fmt == "csv":
        w = csv.DictWriter(out, fieldnames=list(df.columns), lineterminator="\n")
        w.writeheader()
        w.writerows(rows_for_json(df))
    else:
        return False
    return True


def pct(v) -> str:
    """A rate as a percentage with one decimal ('-' for none)."""
    import math

    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:.1f}%"


def bounced_cell(r) -> str:
    """The tables' "bounced (h/s/b/u)" cell: bounces and blocks, then the split."""
    return (
        f"{r['bounces'] + r['blocks']} ({r['bounces_hard']}/{r['bounces_soft']}/"
        f"{r['blocks']}/{r['bounces_undetermined']})"
    )
