-- suppressions: recipients (email hashes) to stop mailing, one row per recipient,
-- reason and the day (event_date) the recipient qualified for it.
-- Reasons: hard_bounce, spam_report, unsubscribe, soft_bounces (at least
-- @soft_bounce_threshold messages soft-bounced within @soft_bounce_days days),
-- invalid_address. A drop because the provider already suppresses the address
-- (SendGrid 'Bounced Address' / 'Spam Reporting Address' / 'Unsubscribed Address' /
-- 'Invalid'; CMC error status 10 / 11 / 9) suppresses for the same reason.
-- BigQuery Standard SQL; DuckDB runs it through pipelines.sql.to_duckdb.
-- Parameters: @start_date, @end_date (DATE), @soft_bounce_threshold, @soft_bounce_days (INT64).
WITH events_in_range AS (
  SELECT provider, event_type, bounce_class, event_ts, event_date, message_id, email_hash,
         recipient_domain,
         CASE
           WHEN event_type = 'bounce' AND bounce_class = 'hard' THEN 'hard_bounce'
           WHEN event_type = 'spamreport' THEN 'spam_report'
           WHEN event_type = 'unsubscribe' THEN 'unsubscribe'
           -- drop reasons as delivery_outcomes classifies them
           WHEN event_type != 'dropped' THEN NULL
           WHEN LOWER(TRIM(reason)) LIKE 'bounced address%' THEN 'hard_bounce'
           WHEN LOWER(TRIM(reason)) LIKE 'spam reporting address%' THEN 'spam_report'
           WHEN LOWER(TRIM(reason)) LIKE 'unsubscribed address%' THEN 'unsubscribe'
           WHEN LOWER(TRIM(reason)) = 'invalid' OR LOWER(TRIM(reason)) LIKE 'invalid email%'
                OR LOWER(TRIM(reason)) LIKE 'invalid address%' THEN 'invalid_address'
         END AS direct_reason
  FROM events
  -- Soft bounces up to @soft_bounce_days before @start_date count toward the window.
  WHERE event_date BETWEEN DATE_SUB(@start_date, INTERVAL @soft_bounce_days DAY) AND @end_date
    AND email_hash IS NOT NULL
    AND (event_type IN ('spamreport', 'unsubscribe', 'dropped')
         OR (event_type = 'bounce' AND bounce_class IN ('hard', 'soft')))
),

direct AS (
  SELECT
    event_date,
    email_hash,
    direct_reason AS reason,
    MAX(recipient_domain) AS recipient_domain,
    MIN(event_ts) AS first_seen,
    MAX(event_ts) AS last_seen,
    COUNT(*) AS event_count,
    COUNT(DISTINCT message_id) AS message_count,
    ARRAY_AGG(DISTINCT provider ORDER BY provider) AS providers
  FROM events_in_range
  WHERE event_date BETWEEN @start_date AND @end_date
    AND direct_reason IS NOT NULL
  GROUP BY event_date, email_hash, direct_reason
),

-- One soft bounce per (recipient, message): CMC reports a failure twice, providers
-- retry; only distinct messages count toward the threshold.
soft AS (
  SELECT provider, event_ts, event_date, message_id, email_hash, recipient_domain
  FROM events_in_range
  WHERE event_type = 'bounce' AND bounce_class = 'soft'
  QUALIFY ROW_NUMBER() OVER (
    PARTITION BY email_hash, message_id ORDER BY event_ts, provider) = 1
),

-- A recipient qualifies on a day it soft-bounced when the window of @soft_bounce_days
-- days ending that day holds enough distinct soft-bounced messages.
soft_days AS (
  SELECT DISTINCT email_hash, event_date
  FROM soft
  WHERE event_date BETWEEN @start_date AND @end_date
),

repeated AS (
  SELECT
    d.event_date,
    d.email_hash,
    'soft_bounces' AS reason,
    MAX(s.recipient_domain) AS recipient_domain,
    MIN(s.event_ts) AS first_seen,
    MAX(s.event_ts) AS last_seen,
    COUNT(*) AS event_count,
    COUNT(DISTINCT s.message_id) AS message_count,
    ARRAY_AGG(DISTINCT s.provider ORDER BY s.provider) AS providers
  FROM soft_days AS d
  JOIN soft AS s
    ON s.email_hash = d.email_hash
   AND s.event_date <= d.event_date
   AND DATE_DIFF(d.event_date, s.event_date, DAY) < @soft_bounce_days
  GROUP BY d.event_date, d.email_hash
  HAVING COUNT(DISTINCT s.message_id) >= @soft_bounce_threshold
)

SELECT * FROM direct
UNION ALL
SELECT * FROM repeated
