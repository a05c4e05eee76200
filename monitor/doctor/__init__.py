"""`llm-monitor doctor`: the deployment checklist from the incident, automated, with a fix for every finding.

findings.py   Finding / DoctorReport (plain data, JSON shape)
client.py     the doctor's requests (chat/completion through the Prober, JSON for the rest)
context.py    what every check gets
remedies.py   model-family-specific fixes: stop tokens, templates, and the parser flags per server
checks_*.py   one async function per checklist item (checks_pipelines.py: reasoning, tools, JSON schema)
runner.py     run_doctor(settings, target) -> exit code
printout.py   rich rendering
"""

from __future__ import annotations

from monitor.doctor.findings import CHECK_IDS, DoctorReport, Finding
from monitor.doctor.runner import diagnose, doctor, run_doctor

__all__ = ["CHECK_IDS", "DoctorReport", "Finding", "diagnose", "doctor", "run_doctor"]
