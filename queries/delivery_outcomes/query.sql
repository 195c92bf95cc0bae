-- delivery_outcomes: SendGrid category-stats metrics per event_date x category x provider.
-- BigQuery Standard SQL; DuckDB runs it through pipelines.sql.to_duckdb.
-- Parameters: @start_date, @end_date (DATE), @days_read_before (INT64). See metadata.yaml.
WITH events_in_range AS (
  -- Read @days_read_before before @start_date so an outcome whose first event came
  -- earlier is attributed to that earlier date (and not counted again here).
  SELECT
    event_id,
    provider,
    event_type,
    IFNULL(bounce_class, 'undetermined') AS bounce_class,
    event_ts,
    event_date,
    CONCAT(IFNULL(message_id, ''), '/', IFNULL(email_hash, '')) AS recipient_key,
    provider_key,
    LOWER(TRIM(IFNULL(reason, ''))) AS reason_lc,
    IF(IFNULL(ARRAY_LENGTH(categories), 0) = 0, ['(none)'], categories) AS categories,
    -- 1 when the provider dropped this (message, recipient): it was never sent, so a
    -- failure report for it (CMC echoes a drop as a failed delivery) is not a bounce.
    MAX(IF(event_type = 'dropped', 1, 0)) OVER (PARTITION BY provider_key) AS was_dropped
  FROM (
    SELECT *, CONCAT(provider, '/', IFNULL(message_id, ''), '/', IFNULL(email_hash, '')) AS provider_key
    FROM events
    -- One day past @end_date too, only to see a drop reported just after midnight
    -- (outcomes are counted for @start_date..@end_date alone, in facts).
    WHERE event_date BETWEEN DATE_SUB(@start_date, INTERVAL @days_read_before DAY)
                         AND DATE_ADD(@end_date, INTERVAL 1 DAY)
  )
),

-- Every event that signals a delivery outcome, once per outcome it signals. Drops are
-- classified by SendGrid's reason words (below); providers whose failures are drops in
-- SendGrid's sense say so in the same words (CMC error status 9/10/11, see
-- pipelines/normalizers/cmc.py).
outcome_events AS (
  SELECT *, 'request' AS outcome FROM events_in_range
  WHERE event_type IN ('processed', 'dropped', 'deferred', 'delivered', 'bounce')
  UNION ALL
  SELECT *, event_type AS outcome FROM events_in_range
  WHERE event_type IN ('processed', 'dropped', 'deferred', 'delivered', 'bounce', 'spamreport')
    AND NOT (event_type = 'bounce' AND was_dropped = 1)
  UNION ALL
  SELECT *, 'unsubscribe' AS outcome FROM events_in_range
  WHERE event_type IN ('unsubscribe', 'group_unsubscribe')
),

-- A (message, recipient) counts once per outcome: on the date, in the categories and
-- (for bounces) with the class of its first event of that outcome. CMC's failed
-- delivery + bounce pair is one bounce; deferred-then-delivered is one deferred and
-- one delivered; delivered-then-bounce is one delivered and one bounce.
first_outcomes AS (
  SELECT *
  FROM outcome_events
  WHERE TRUE
  QUALIFY ROW_NUMBER() OVER (
    PARTITION BY provider_key, outcome ORDER BY event_ts, event_id) = 1
),

facts AS (
  SELECT f.event_date, category, f.provider, f.outcome AS kind, f.bounce_class, f.reason_lc,
         f.recipient_key, f.event_id
  FROM first_outcomes AS f, UNNEST(f.categories) AS category
  WHERE f.event_date BETWEEN @start_date AND @end_date
  UNION ALL
  -- Engagement: every event (opens, clicks) and the unique (message, recipient) per day.
  SELECT e.event_date, category, e.provider, e.event_type AS kind, e.bounce_class, e.reason_lc,
         e.recipient_key, e.event_id
  FROM events_in_range AS e, UNNEST(e.categories) AS category
  WHERE e.event_date BETWEEN @start_date AND @end_date
    AND e.event_type IN ('open', 'click')
),

counts AS (
  SELECT
    event_date,
    category,
    provider,
    COUNT(DISTINCT IF(kind = 'request', recipient_key, NULL)) AS requests,
    COUNT(DISTINCT IF(kind = 'processed', recipient_key, NULL)) AS processed,
    COUNT(DISTINCT IF(kind = 'delivered', recipient_key, NULL)) AS delivered,
    COUNT(DISTINCT IF(kind = 'bounce' AND bounce_class != 'block', recipient_key, NULL)) AS bounces,
    COUNT(DISTINCT IF(kind = 'bounce' AND bounce_class = 'hard', recipient_key, NULL)) AS bounces_hard,
    COUNT(DISTINCT IF(kind = 'bounce' AND bounce_class = 'soft', recipient_key, NULL)) AS bounces_soft,
    COUNT(DISTINCT IF(kind = 'bounce' AND bounce_class = 'undetermined', recipient_key, NULL)) AS bounces_undetermined,
    COUNT(DISTINCT IF(kind = 'bounce' AND bounce_class = 'block', recipient_key, NULL)) AS blocks,
    COUNT(DISTINCT IF(kind = 'deferred', recipient_key, NULL)) AS deferred,
    COUNT(DISTINCT IF(kind = 'dropped', recipient_key, NULL)) AS drops,
    COUNT(DISTINCT IF(kind = 'dropped' AND reason_lc LIKE 'bounced address%', recipient_key, NULL)) AS bounce_drops,
    COUNT(DISTINCT IF(kind = 'dropped' AND reason_lc LIKE 'spam reporting address%', recipient_key, NULL)) AS spam_report_drops,
    COUNT(DISTINCT IF(kind = 'dropped' AND reason_lc LIKE 'unsubscribed address%', recipient_key, NULL)) AS unsubscribe_drops,
    COUNT(DISTINCT IF(kind = 'dropped' AND (reason_lc = 'invalid' OR reason_lc LIKE 'invalid email%' OR reason_lc LIKE 'invalid address%'), recipient_key, NULL)) AS invalid_emails,
    COUNT(DISTINCT IF(kind = 'open', event_id, NULL)) AS opens,
    COUNT(DISTINCT IF(kind = 'open', recipient_key, NULL)) AS unique_opens,
    COUNT(DISTINCT IF(kind = 'click', event_id, NULL)) AS clicks,
    COUNT(DISTINCT IF(kind = 'click', recipient_key, NULL)) AS unique_clicks,
    COUNT(DISTINCT IF(kind = 'spamreport', recipient_key, NULL)) AS spam_reports,
    COUNT(DISTINCT IF(kind = 'unsubscribe', recipient_key, NULL)) AS unsubscribes
  FROM facts
  GROUP BY event_date, category, provider
)

SELECT
  *,
  SAFE_DIVIDE(delivered, requests) AS delivered_rate,
  SAFE_DIVIDE(bounces, requests) AS bounce_rate,
  SAFE_DIVIDE(blocks, requests) AS block_rate,
  SAFE_DIVIDE(deferred, requests) AS deferred_rate,
  SAFE_DIVIDE(drops, requests) AS drop_rate,
  SAFE_DIVIDE(unique_opens, delivered) AS open_rate,
  SAFE_DIVIDE(unique_clicks, delivered) AS click_rate,
  SAFE_DIVIDE(unique_clicks, unique_opens) AS click_to_open_rate,
  SAFE_DIVIDE(spam_reports, delivered) AS spam_report_rate,
  SAFE_DIVIDE(unsubscribes, delivered) AS unsubscribe_rate
FROM counts
