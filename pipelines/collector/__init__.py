"""The webhook collector behind ``mailpulse serve``.

- :mod:`.app`: the Flask app (routes, counters, configuration);
- :mod:`.verification`: SendGrid's signed webhook, Basic auth, the CMC api_key;
- :mod:`.sns`: Amazon SNS message signatures (SES notifications);
- :mod:`.archive`: durable appends, hourly/size rotation, gzip, shipping to gs:// / s3://;
- :mod:`.server`: running it under gunicorn with several workers.
"""

from .app import CollectorConfig, Counters, create_app

__all__ = ["CollectorConfig", "Counters", "create_app"]
