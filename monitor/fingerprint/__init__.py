"""The deployment fingerprint: what identifies a deployment, recorded on the doctor's schedule.

collect.py   the requests (one `Reading` per component) through the doctor's HTTP client
compare.py   pure: digests, readable diffs, TV/KL over top-k logprobs, `judge`
runner.py    `Fingerprinter.run`: collect, store, compare with the baseline, `drift` observations
commands.py  `llm-monitor fingerprint show|accept` and the API's report
"""
