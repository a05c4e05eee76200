"""Rules over server metrics (`server_*`, the catalogue's kind `server`) need a target that is scraped.

A server metric is read from the scrapes of a probe's target (`targets[].metrics`), so a rule over
one must reach one: `scope.target` (a target with `metrics:`), `scope.probe` (whose target has it),
or no scope, which watches the probes of every scraped target (and is an error when there is none).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from monitor.config.alerts import RuleSettings
from monitor.errors import ConfigError
from monitor.metric_catalog import metric

__all__ = ["check_server_rules"]


def check_server_rules(rules: Sequence[RuleSettings], *, probe_targets: Mapping[str, str], scraped: set[str]) -> None:
    """ConfigError naming the path for a server-metric rule without a scraped target in scope.

    `probe_targets` maps each probe to its target; `scraped` holds the targets with `metrics:`.
    """
    for i, rule in enumerate(rules):
        if rule.metric is None or metric(rule.metric).kind != "server":
            continue
        path = f"rules[{i}].scope"
        scope = rule.scope
        if scope.target is None and scope.probe is None:
            # Unscoped: it watches every probe whose target is scraped; with none, it could never fire.
            if not scraped & set(probe_targets.values()):
                raise ConfigError(
                    f"{path}: {rule.metric} is read from a target's /metrics, and no probed target has metrics:"
                )
            continue
        target = scope.target if scope.target is not None else probe_targets.get(scope.probe or "")
        if target is not None and target not in scraped:
            where = f"{path}.target" if scope.target is not None else f"{path}.probe"
            raise ConfigError(f"{where}: target {target!r} is not scraped; add targets[].metrics to read {rule.metric}")
