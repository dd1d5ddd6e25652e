"""The compiler passes, one per file, run in order by :mod:`lumos_fx.api`."""
