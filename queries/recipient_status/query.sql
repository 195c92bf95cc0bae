-- recipient_status: one row per (provider, message_id, email_hash) with its settled status
-- under forward-only precedence (pipelines/status.py), partitioned by event_date = the
-- date of the recipient's first send-pipeline event.
-- BigQuery Standard SQL; DuckDB runs it through pipelines.sql.to_duckdb.
-- Parameters: @start_date, @end_date (DATE), @days_read_before, @days_read_after (INT64).
WITH events_in_range AS (
  SELECT
    event_id,
    provider,
    event_type,
    provider_event_type,
    bounce_class,
    event_ts,
    event_date,
    message_id,
    email_hash,
    recipient_domain,
    categories,
    reason,
    smtp_status,
    -- STATUS_RANK and STATUS_OF_EVENT from pipelines/status.py (a test keeps them equal)
    (CASE event_type WHEN 'processed' THEN 1 WHEN 'deferred' THEN 2 WHEN 'delivered' THEN 3 WHEN 'open' THEN 3 WHEN 'click' THEN 3 WHEN 'spamreport' THEN 3 WHEN 'unsubscribe' THEN 3 WHEN 'group_unsubscribe' THEN 3 WHEN 'group_resubscribe' THEN 3 WHEN 'dropped' THEN 4 WHEN 'bounce' THEN 5 ELSE 0 END) AS status_rank,
    (CASE event_type WHEN 'processed' THEN 'processed' WHEN 'deferred' THEN 'deferred' WHEN 'delivered' THEN 'delivered' WHEN 'open' THEN 'delivered' WHEN 'click' THEN 'delivered' WHEN 'spamreport' THEN 'delivered' WHEN 'unsubscribe' THEN 'delivered' WHEN 'group_unsubscribe' THEN 'delivered' WHEN 'group_resubscribe' THEN 'delivered' WHEN 'dropped' THEN 'dropped' WHEN 'bounce' THEN 'bounce' ELSE NULL END) AS status_of_event,
    event_type IN ('processed', 'dropped', 'deferred', 'delivered', 'bounce') AS is_send_event
  FROM events
  -- Look back to see whether a recipient began before @start_date (its row belongs to
  -- an earlier partition) and ahead to see how recipients of late dates settled.
  WHERE event_date BETWEEN DATE_SUB(@start_date, INTERVAL @days_read_before DAY)
                       AND DATE_ADD(@end_date, INTERVAL @days_read_after DAY)
),

per_recipient AS (
  SELECT
    MIN(IF(is_send_event, event_date, NULL)) OVER recipient AS event_date,
    provider,
    message_id,
    email_hash,
    MAX(recipient_domain) OVER recipient AS recipient_domain,
    categories,
    status_of_event AS status,
    event_type AS status_event_type,
    provider_event_type AS status_provider_event_type,
    event_ts AS status_event_ts,
    reason,
    bounce_class,
    smtp_status,
    MIN(event_ts) OVER recipient AS first_event_ts,
    MAX(event_ts) OVER recipient AS last_event_ts,
    COUNT(*) OVER recipient AS event_count,
    COUNT(IF(event_type = 'deferred', 1, NULL)) OVER recipient AS deferred_count,
    MIN(IF(event_type = 'delivered', event_ts, NULL)) OVER recipient AS delivered_ts
  FROM events_in_range
  WHERE TRUE
  -- The deciding event: the most final status; ties go to the latest event.
  QUALIFY ROW_NUMBER() OVER (
    PARTITION BY provider, message_id, email_hash
    ORDER BY status_rank DESC, event_ts DESC, event_id DESC) = 1
  WINDOW recipient AS (PARTITION BY provider, message_id, email_hash)
)

SELECT
  event_date,
  provider,
  message_id,
  email_hash,
  recipient_domain,
  categories,
  status,
  status IN ('delivered', 'bounce', 'dropped') AS settled,
  status_event_type,
  status_provider_event_type,
  status_event_ts,
  reason,
  bounce_class,
  smtp_status,
  first_event_ts,
  last_event_ts,
  delivered_ts,
  event_count,
  deferred_count
FROM per_recipient
-- Recipients seen only through engagement (an open long after the send) have no
-- send event in range: their row lives in the partition of their send.
WHERE event_date BETWEEN @start_date AND @end_date
