"""The webhook collector behind ``mailpulse serve``.

- :mod:`.app`: the Flask app (routes, counters, configuration);
- :mod:`.verification`: SendGrid's signed webhook, Basic auth, the CMC api_key;
- :mod:`.sns`: Amazon SNS message signatures (SES notifications);
- :mod:`.archive`: durable appends, hourly/size rotation, gzip, shipping to gs:// / s3://;
- :mod:`.server`: running it under gunicorn with several workers.
"""

__all__ = ["CollectorConfig", "Counters", "create_app"]


def __getattr__(name: str):
    # Flask is imported when the app is used, not when a command's flags are built
    # (``mailpulse load`` builds every command's parser; Flask cost it 0.1-0.25 s).
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
