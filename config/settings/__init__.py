"""Settings are split by purpose: ``base`` (everything), ``dev`` (the embedded default),
``test`` (pytest) and ``production`` (``manage.py check --deploy`` clean)."""
