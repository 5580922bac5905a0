"""The ``local`` and ``tar`` exporters."""
