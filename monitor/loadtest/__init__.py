"""Load tests: Locust runs as a child process, this package runs it and keeps the results.

Pure data, importable by the Locust side: ``window`` (per-second aggregates), ``slo_metrics``,
``slo``, ``shapes``, ``prompts``. Runner side (asyncio, never imported by locustfiles):
``params``, ``process``, ``recorder``, ``repo``, ``sweep``, ``canary``, ``runner``,
``report``, ``html``. Nothing here imports locust, and this module imports nothing.
"""
