"""The frames and figures of the analyst notebooks (notebooks/*.ipynb).

Notebook cells call these functions and plot what they return; no SQL or arithmetic is
copied into cells. Every function that reads takes a warehouse (a URI such as
``duckdb:///path/file.duckdb`` / ``bigquery://PROJECT/DATASET``, or a warehouse object);
every query is BigQuery SQL with ``@name`` parameters, so the same notebook runs on the
embedded default and on BigQuery.

The shared pieces (the rate definitions :data:`pipelines.analysis.RATES`, the warehouse
helpers, :func:`pipelines.analysis.category_daily`) stay in :mod:`pipelines.analysis`,
next to the daily alerts that use them; this package depends on them, never the reverse.

One module per view; this package re-exports their public names (``frames.X`` and
``from pipelines.frames import X`` are the notebooks' API):

- :mod:`.window`: :func:`data_window` ends on the latest day mail was *sent* (requests >
  0), not on a day that holds only late reports of the day before, and
  :func:`trim_empty_tail` drops such trailing days from a frame, so no plot ends in a run
  of zeros.
- :mod:`.health`: :func:`delivery_health`, per day and category, and its tables and plots.
- :mod:`.mailboxes`: :func:`mailbox_daily` / :func:`mailbox_summary`: ``domain_outcomes``
  per mailbox provider (Gmail, Microsoft, docomo, ...; pipelines/mailbox.py) and day.
- :mod:`.domains`: :func:`domain_ranking`: recipient domains ranked by a rate, with their
  volume, among domains with at least ``min_requests`` requests (a domain of 3 recipients
  with 1 bounce is noise, not the worst domain).
- :mod:`.bounces`: :func:`bounce_codes`: bounced recipients grouped by enhanced status
  code (RFC 3463, ``5.1.1``), across providers; each recipient counted once (CMC reports a
  failure twice, as a failed delivery and as a bounce); CMC's own status numbers count
  under the code they document (:data:`CMC_STATUS_CODE`).
- :mod:`.status_codes`: reading bounce texts (the enhanced status code in a provider's
  text, CMC's numbers, what a code means); no frames.
- :mod:`.campaign`: :func:`campaign_funnel`: sent -> delivered -> opened -> clicked, each
  stage a subset of the one before.
"""

from .bounces import (
    bounce_classes,
    bounce_codes,
    bounce_reasons,
    plot_bounces,
    suppressions_growth,
    top_bounce_reasons,
)
from .campaign import (
    DEFAULT_HOURS_AFTER,
    FUNNEL_STAGES,
    SendWindow,
    campaign_breakdown,
    campaign_funnel,
    campaign_funnels,
    campaign_recipients,
    campaign_statuses,
    campaign_timeline,
    plot_campaign,
    send_window,
    time_to_deliver,
)
from .domains import (
    DEFAULT_MIN_REQUESTS,
    bounce_domains,
    domain_ranking,
)
from .health import (
    category_summary,
    delivery_health,
    plot_rates,
    plot_stacked_outcomes,
    rate_table,
    stacked_outcomes,
    top_categories,
)
from .mailboxes import (
    mailbox_daily,
    mailbox_summary,
    plot_mailbox_rates,
    top_mailboxes,
)
from .status_codes import (
    CMC_STATUS_CODE,
    CODE_MEANING,
    ENHANCED_CODE,
    NO_CODE,
    code_meaning,
    enhanced_status_code,
    status_code_of,
)
from .window import (
    data_window,
    trim_empty_tail,
)

#: The notebooks' frames and figures (what ``from pipelines.frames import *`` gives).
__all__ = [
    "data_window",
    "trim_empty_tail",
    "delivery_health",
    "top_categories",
    "rate_table",
    "stacked_outcomes",
    "category_summary",
    "plot_rates",
    "plot_stacked_outcomes",
    "mailbox_daily",
    "mailbox_summary",
    "top_mailboxes",
    "plot_mailbox_rates",
    "DEFAULT_MIN_REQUESTS",
    "domain_ranking",
    "bounce_domains",
    "bounce_classes",
    "ENHANCED_CODE",
    "CODE_MEANING",
    "NO_CODE",
    "CMC_STATUS_CODE",
    "enhanced_status_code",
    "status_code_of",
    "code_meaning",
    "bounce_reasons",
    "bounce_codes",
    "top_bounce_reasons",
    "suppressions_growth",
    "plot_bounces",
    "SendWindow",
    "send_window",
    "DEFAULT_HOURS_AFTER",
    "campaign_recipients",
    "FUNNEL_STAGES",
    "campaign_funnel",
    "campaign_funnels",
    "campaign_statuses",
    "time_to_deliver",
    "campaign_timeline",
    "campaign_breakdown",
    "plot_campaign",
]
