"""Synthetic provider archives with their ground truth (``mailpulse synth``).

``generate(out, date, messages=..., seed=...)`` writes a deterministic, realistic archive
in the layout the load job reads::

    OUT/<provider>/YYYY/MM/DD/HH/synth-<D>-<YYYYMMDDHH>-<part>.json.gz

for SendGrid, Amazon SES and Customers Mail Cloud, each in the provider's NATIVE format
(what :mod:`pipelines.normalizers` reads):

- SendGrid: one Event Webhook POST body per line, a JSON array mixing event kinds;
- SES: event-publishing records one per line as Firehose writes them, a share of them
  inside an SNS envelope (``Message`` is the record as a JSON string);
- CMC: webhook bodies (``deliveries`` / ``bounces`` / ``blocks``), ``created`` in Japan
  time, a failed delivery reported twice (``deliveries`` failed, ``bounces`` a second later).

Every message-recipient follows a lifecycle (processed -> deferred* -> delivered | bounce
| dropped, then opens, clicks, spam reports, unsubscribes); categories and recipient
domains differ in health. Provider retries (the same SendGrid post again, in the same or a
later hour file; Firehose writing an SES record twice), late events (events of date D in
D+1's hour directories) and optional corrupt records (one dead letter each) are added on
top. Files go to the hour directory of their *arrival*, so deferrals that settle up to
72 h later land in later days' directories.

The :class:`GroundTruth` is computed from the generator's own lifecycle model while it
generates (never by re-reading files): per (message, recipient) final status, per category
and provider counts, per event date. It is what other tests compare the pipeline against.

Same arguments -> byte-identical files: one seeded :class:`random.Random` drives the
model, per-file decisions use RNGs seeded from (seed, provider, hour), gzip is written
with ``mtime=0`` and file names are stable. Memory does not grow with the number of
events: messages are generated in send-time order, events are buffered per 5-minute
arrival slot, a slot is batched into provider records and appended to its hour file as
soon as no later message can reach it (a file is written once it holds
``events_per_file`` events or its hour is complete), and buffered slots more than an hour
ahead spill to temporary files past ``spill_bytes``. Compression runs in a second thread.
Only the ground truth keeps ~20 bytes per recipient.

The package, one module per job:

- :mod:`.model`: providers, event types, metrics, time constants, category and domain profiles;
- :mod:`.config`: :class:`SynthConfig` (what to generate) and its validation;
- :mod:`.generator`: the lifecycle model and each provider's native records;
- :mod:`.formats`: the constant provider fields spliced into those records;
- :mod:`.ids`: deterministic provider ids;
- :mod:`.output`: the per-slot event buffer (spilling to disk) and the gzip'd hour files;
- :mod:`.truth`: :class:`GroundTruth`, counted while generating;
- :mod:`.summary`: :class:`SynthSummary`, what a run wrote;
- :mod:`.api`: :func:`generate` and the guard against replacing an earlier archive.
"""

from __future__ import annotations

from .api import (
    ArchiveExists,
    existing_files,
    generate,
)
from .config import SynthConfig
from .model import (
    BLOCK,
    BOUNCE,
    CATEGORY_PROFILES,
    CLASS_NAMES,
    CLICK,
    DAY_MS,
    DEFER_HORIZON_MS,
    DEFERRED,
    DELIVERED,
    DIURNAL,
    DOMAIN_PROFILES,
    DROPPED,
    HARD,
    HOUR_MS,
    JST_OFFSET_S,
    METRICS,
    OPEN,
    PROCESSED,
    PROVIDER_SHARE,
    PROVIDERS,
    RETRY_HORIZON_HOURS,
    SLOT_MS,
    SLOTS_PER_HOUR,
    SOFT,
    SPAMREPORT,
    TYPE_NAMES,
    UNSUBSCRIBE,
    CategoryProfile,
    DomainProfile,
)
from .summary import SynthSummary
from .truth import (
    GroundTruth,
    RecipientTruth,
    recipient_address,
)

__all__ = [
    "ArchiveExists",
    "BLOCK",
    "BOUNCE",
    "CATEGORY_PROFILES",
    "CLASS_NAMES",
    "CLICK",
    "CategoryProfile",
    "DAY_MS",
    "DEFERRED",
    "DEFER_HORIZON_MS",
    "DELIVERED",
    "DIURNAL",
    "DOMAIN_PROFILES",
    "DROPPED",
    "DomainProfile",
    "GroundTruth",
    "HARD",
    "HOUR_MS",
    "JST_OFFSET_S",
    "METRICS",
    "OPEN",
    "PROCESSED",
    "PROVIDERS",
    "PROVIDER_SHARE",
    "RETRY_HORIZON_HOURS",
    "RecipientTruth",
    "SLOTS_PER_HOUR",
    "SLOT_MS",
    "SOFT",
    "SPAMREPORT",
    "SynthConfig",
    "SynthSummary",
    "TYPE_NAMES",
    "UNSUBSCRIBE",
    "existing_files",
    "generate",
    "recipient_address",
]
