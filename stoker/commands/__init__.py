"""Data subcommands of the ``stoker`` command (``scan``, ``split``, ``report``, ``profile``, ``compare``, ``pack``)."""
