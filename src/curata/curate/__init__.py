"""Curation: a policy turns findings into a reviewable plan; applying it writes a new version."""

from curata.curate.apply import CurateResult, curate
from curata.curate.plan import Plan, build_plan
from curata.curate.policy import (
    DEFAULT_POLICY_YAML,
    CheckPolicy,
    Policy,
    default_policy,
    load_policy,
    parse_policy,
)
from curata.curate.redact import redact_text

__all__ = [
    "DEFAULT_POLICY_YAML",
    "CheckPolicy",
    "CurateResult",
    "Plan",
    "Policy",
    "build_plan",
    "curate",
    "default_policy",
    "load_policy",
    "parse_policy",
    "redact_text",
]
