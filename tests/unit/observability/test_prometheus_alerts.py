"""The shipped alerting rules (`deploy/prometheus/alerts.yaml`) pass Prometheus' own
checker and their unit tests (`alerts_test.yaml`) under Debian's `promtool`, and every
metric they use is one the server exports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from imageregistry.observability.metrics import Metrics
from tests.support.prometheus import PROMTOOL

RULES = Path(__file__).resolve().parents[3] / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], cwd=RULES, capture_output=True, text=True, timeout=120)


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", "alerts.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = promtool("test", "rules", "alerts_test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_alerts_use_only_exported_metrics() -> None:
    exported = set()
    for family in Metrics().registry.collect():  # counters are exposed with `_total`
        exported |= {family.name, f"{family.name}_total"}
    used = set(re.findall(r"imageregistry_[a-z_]+", (RULES / "alerts.yaml").read_text()))
    assert used and used <= exported, used - exported
