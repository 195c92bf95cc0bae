"""Writes the analyst notebooks (``python notebooks/build_notebooks.py``).

The .ipynb files are generated from this script with nbformat so they stay reviewable:
edit the cells here, rerun, commit both (outputs are never committed;
tests/test_notebooks.py checks that the committed files equal what this script writes).
Cells only call :mod:`pipelines.frames` (and the alert rules of :mod:`pipelines.analysis`)
and plot what they return; the first code cell
holds the parameters (tagged ``parameters``, as papermill expects).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

WAREHOUSE_PARAM = (
    "# None: $MAILPULSE_WAREHOUSE, else the embedded default ($MAILPULSE_DATA_DIR/warehouse.duckdb).\n"
    "# Or a URI: 'duckdb:///path/file.duckdb', 'bigquery://PROJECT/DATASET'.\n"
    "WAREHOUSE = None\n"
)
SETUP = (
    "%matplotlib inline\n"
    "import pandas as pd\n"
    "from pipelines import analysis, frames\n"
    "\n"
    "pd.set_option('display.max_columns', 40)\n"
    "pd.set_option('display.width', 200)\n"
    "wh = analysis.open_configured(WAREHOUSE)\n"
)


def params(text: str):
    return new_code_cell(text, metadata={"tags": ["parameters"]})


def delivery_health():
    return [
        new_markdown_cell(
            "# Delivery health by category\n\n"
            "Delivered, bounce and spam-report (complaint) rates per category and day, "
            "and what happened to the mail (stacked outcomes), from `delivery_outcomes`.\n\n"
            "Rates say what they divide by: `delivered_rate` and `bounce_rate` divide by "
            "`requests`, `spam_report_rate` by `delivered` (blocks are counted apart from "
            "bounces, as in SendGrid's stats). Rows are summed over providers and the rates "
            "recomputed from the sums."
        ),
        params(
            WAREHOUSE_PARAM
            + "START = None       # 'YYYY-MM-DD'; None: 30 days before END (or the first day with data)\n"
            "END = None         # 'YYYY-MM-DD'; None: the latest day mail was sent (requests > 0)\n"
            "CATEGORIES = None  # a list of categories; None: the TOP_N by requests\n"
            "TOP_N = 6\n"
            "BOUNCE_RATE_THRESHOLD = 0.05\n"
            "SPAM_REPORT_RATE_THRESHOLD = 0.003\n"
            "MIN_VOLUME = 100   # requests per category and day below which no alert is raised\n"
            "MAILBOX_CATEGORY = None  # one category for the mailbox-provider view; None: all\n"
        ),
        new_code_cell(
            SETUP + "start, end = frames.data_window(wh, START, END)\n"
            "print(f'{wh.uri}: {start} .. {end}')"
        ),
        new_markdown_cell("## Per category over the period"),
        new_code_cell(
            "daily = frames.delivery_health(wh, start, end)\n"
            "categories = CATEGORIES or frames.top_categories(daily, TOP_N)\n"
            "frames.category_summary(daily)"
        ),
        new_markdown_cell(
            "## Funnel per campaign\n\n"
            "Recipients first sent to in the window, per category: sent → delivered → opened → "
            "clicked, each stage a subset of the one before (opened: delivered and an open or a "
            "click; clicked: delivered and a click), opens and clicks followed 3 days past END. "
            "`open_share` and `click_share` divide by delivered."
        ),
        new_code_cell("funnels = frames.campaign_funnels(wh, start, end)\nfunnels"),
        new_markdown_cell(
            "## Rates over time\n\nDashed red lines: the alert thresholds "
            "the daily Airflow DAG uses."
        ),
        new_code_cell(
            "thresholds = analysis.Thresholds(bounce_rate=BOUNCE_RATE_THRESHOLD,\n"
            "                                 spam_report_rate=SPAM_REPORT_RATE_THRESHOLD,\n"
            "                                 min_volume=MIN_VOLUME)\n"
            "fig = frames.plot_rates(daily, categories, thresholds=thresholds)"
        ),
        new_markdown_cell(
            "## What happened to the mail\n\nRecipients per outcome and day, "
            "for all categories and for the three largest."
        ),
        new_code_cell("fig = frames.plot_stacked_outcomes(daily, categories[:3])"),
        new_markdown_cell(
            "## Days above a threshold\n\nThe alerts the DAG would have raised "
            "(categories with at least `MIN_VOLUME` requests that day)."
        ),
        new_code_cell(
            "breaches = analysis.find_breaches(daily, thresholds)\n"
            "pd.DataFrame([b.as_dict() for b in breaches])"
        ),
        new_markdown_cell(
            "## By mailbox provider\n\n"
            "The same counts per mailbox provider (Gmail, Microsoft, Yahoo! JAPAN, docomo, au, "
            "SoftBank, ...; `other` for domains the mapping in "
            "`pipelines/data/mailbox_providers.csv` does not list), from `domain_outcomes`, "
            "summed over sending providers and categories (or `MAILBOX_CATEGORY` only)."
        ),
        new_code_cell(
            "mailbox = frames.mailbox_daily(wh, start, end, category=MAILBOX_CATEGORY)\n"
            "frames.mailbox_summary(mailbox)"
        ),
        new_code_cell("fig = frames.plot_mailbox_rates(mailbox)"),
    ]


def bounce_analysis():
    return [
        new_markdown_cell(
            "# Bounce analysis\n\n"
            "Bounce classes over time, bounced recipients by enhanced status code across "
            "providers, the recipient domains ranked by bounce rate (with their volume), and "
            "how the list of recipients to stop mailing (`suppressions`) grows."
        ),
        params(
            WAREHOUSE_PARAM
            + "START = None     # 'YYYY-MM-DD'; None: 30 days before END (or the first day with data)\n"
            "END = None       # 'YYYY-MM-DD'; None: the latest day mail was sent (requests > 0)\n"
            "CATEGORY = None  # one category, or None for all\n"
            "TOP_N = 10\n"
            "MIN_REQUESTS = 50  # a domain needs this many requests in the window to be ranked\n"
        ),
        new_code_cell(
            SETUP + "start, end = frames.data_window(wh, START, END)\n"
            "print(f'{wh.uri}: {start} .. {end}, category {CATEGORY or \"(all)\"}')"
        ),
        new_markdown_cell(
            "## Classes per day\n\n`hard`, `soft`, `undetermined` bounces and "
            "`block`s (bounced recipients, from `delivery_outcomes`)."
        ),
        new_code_cell(
            "daily = frames.delivery_health(wh, start, end,\n"
            "                               categories=[CATEGORY] if CATEGORY else None)\n"
            "classes = frames.bounce_classes(daily)\n"
            "classes"
        ),
        new_markdown_cell(
            "## By enhanced status code\n\n"
            "Bounced recipients grouped by the RFC 3463 code (`5.1.1` no such user, `4.2.2` "
            "mailbox full, `5.7.1` refused by policy, ...) whichever provider reported them and "
            "however it worded the reason. Each recipient counts once: CMC reports a failure "
            "twice (a failed delivery and a bounce), and the more informative report is kept. "
            "CMC's own status numbers count under the code they document (`code_basis` says "
            "`cmc status N`); bounces without any code are listed per reason."
        ),
        new_code_cell(
            "reasons = frames.bounce_reasons(wh, start, end, category=CATEGORY)\n"
            "codes = frames.bounce_codes(reasons)\n"
            "codes.head(TOP_N)"
        ),
        new_markdown_cell("## Reasons as the providers word them"),
        new_code_cell("frames.top_bounce_reasons(wh, start, end, category=CATEGORY, n=TOP_N)"),
        new_markdown_cell(
            "## Recipient domains ranked by bounce rate\n\n"
            "`bounce_rate` = bounces / requests (blocks apart, in `block_rate`; both in "
            "`bounced_rate`), from `domain_outcomes`, worst first among domains with at "
            "least `MIN_REQUESTS` requests; `requests` is the volume."
        ),
        new_code_cell(
            "domains = frames.domain_ranking(wh, start, end, category=CATEGORY, n=TOP_N,\n"
            "                                min_requests=MIN_REQUESTS)\n"
            "print(f\"{domains.attrs['domains_below_min']} smaller domains \"\n"
            "      f\"({domains.attrs['requests_below_min']} requests) not ranked\")\n"
            "domains"
        ),
        new_markdown_cell(
            "## Suppressions growth\n\nRecipients suppressed for the first "
            "time per day and reason, and the running total (all categories)."
        ),
        new_code_cell("growth = frames.suppressions_growth(wh, start, end)\ngrowth"),
        new_code_cell("fig = frames.plot_bounces(classes, domains, growth, codes)"),
    ]


def campaign_postmortem():
    return [
        new_markdown_cell(
            "# Campaign post-mortem\n\n"
            "One category and send window: the sent → delivered → opened → clicked funnel, "
            "how its recipients settled (forward-only status from `recipient_status`), the "
            "events hour by hour, how long delivery took, and how it did per mailbox provider "
            "and recipient domain."
        ),
        params(
            WAREHOUSE_PARAM
            + "CATEGORY = None    # None: the category with most recipients on the day\n"
            "SEND_START = None  # e.g. '2026-11-20T09:00:00Z'; None: the category's first send that day\n"
            "SEND_END = None    # None: its last send that day\n"
            "DAY = None         # 'YYYY-MM-DD' used when the window is not given; None: the latest day\n"
            "HOURS_AFTER = 72   # how long after the send to follow events (deferrals settle within 72 h)\n"
        ),
        new_code_cell(
            SETUP + "window = frames.send_window(wh, CATEGORY, SEND_START, SEND_END,\n"
            "                            day=pd.Timestamp(DAY).date() if DAY else None)\n"
            "print(f'{wh.uri}: {window.describe()}')"
        ),
        new_markdown_cell(
            "## Funnel: sent → delivered → opened → clicked\n\n"
            "Recipients per stage, each stage a subset of the one before: `delivered` had a "
            "delivered event; `opened` is delivered and opened or clicked (a click proves an "
            "open the tracking pixel missed); `clicked` is delivered and clicked. Opens and "
            "clicks are followed for `HOURS_AFTER` hours after the window."
        ),
        new_code_cell(
            "recipients = frames.campaign_recipients(wh, window, hours_after=HOURS_AFTER)\n"
            "funnel = frames.campaign_funnel(recipients)\n"
            "funnel"
        ),
        new_markdown_cell("## How the recipients settled"),
        new_code_cell("frames.campaign_statuses(recipients)"),
        new_markdown_cell("## Events hour by hour"),
        new_code_cell(
            "timeline = frames.campaign_timeline(wh, window, hours_after=HOURS_AFTER)\ntimeline"
        ),
        new_markdown_cell("## Time to delivery (minutes)"),
        new_code_cell(
            "minutes = frames.time_to_deliver(recipients)\n"
            "minutes.describe(percentiles=[0.5, 0.9, 0.99])"
        ),
        new_markdown_cell(
            "## Per mailbox provider (Gmail vs docomo ...), domain and sending provider"
        ),
        new_code_cell("frames.campaign_breakdown(recipients, by='mailbox_provider')"),
        new_code_cell("frames.campaign_breakdown(recipients, by='recipient_domain')"),
        new_code_cell("frames.campaign_breakdown(recipients, by='provider')"),
        new_code_cell("fig = frames.plot_campaign(window, funnel, timeline, minutes)"),
    ]


NOTEBOOKS = {
    "delivery_health.ipynb": delivery_health,
    "bounce_analysis.ipynb": bounce_analysis,
    "campaign_postmortem.ipynb": campaign_postmortem,
}


def build(name: str) -> nbformat.NotebookNode:
    nb = new_notebook(cells=NOTEBOOKS[name]())
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    # Stable cell ids keep rebuilds byte-identical.
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{Path(name).stem.replace('_', '-')}-{i:02d}"
    return nb


def render(name: str) -> str:
    return nbformat.writes(build(name)) + "\n"


def main(out: Path = HERE) -> int:
    for name in NOTEBOOKS:
        (out / name).write_text(render(name), encoding="utf-8")
        print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE))
