"""The policy file: the default policy, validation errors naming the line, mapping onto AuditSettings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curata.cli import app
from curata.curate.policy import (
    ACTIONS,
    DEFAULT_POLICY_YAML,
    default_policy,
    known_check_names,
    load_policy,
    parse_policy,
)
from curata.errors import ConfigError

runner = CliRunner()


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_policy(text, source="curata.yaml")
    return str(info.value)


def test_default_policy_parses_and_covers_every_check() -> None:
    pol = default_policy()
    assert set(known_check_names()) <= set(pol.checks)
    assert pol.action_for("exact_duplicate").action == "drop"
    assert pol.action_for("split_leakage").action == "drop"
    label = pol.action_for("label_issue")
    assert label.action == "relabel" and label.settings["min_confidence"] == 0.95
    assert pol.action_for("pii").action == "redact"
    assert pol.action_for("licence").action == "flag"
    # The duplicate representative rule and the leakage rule are stated in the text users see.
    assert "earliest split (train, then val, then test)" in DEFAULT_POLICY_YAML
    assert "removes the copies in the earlier split" in DEFAULT_POLICY_YAML
    assert all(cp.action in ACTIONS for cp in pol.checks.values())


def test_policy_default_command_prints_the_shipped_text() -> None:
    res = runner.invoke(app, ["policy", "--default"])
    assert res.exit_code == 0
    assert res.output == DEFAULT_POLICY_YAML
    assert parse_policy(res.output, source="<default policy>").as_dict() == default_policy().as_dict()


def test_unknown_top_level_key_names_line_and_allowed_keys() -> None:
    msg = error_of("version: 1\ndefault_action: flag\nchekcs: {}\n")
    assert msg.startswith("curata.yaml:3:")
    assert "unknown key 'chekcs'" in msg and "checks" in msg


def test_unknown_check_names_line_and_allowed_checks() -> None:
    msg = error_of("checks:\n  exact_duplicate: {action: drop}\n  exact_dupes: {action: drop}\n")
    assert msg.startswith("curata.yaml:3:")
    assert "unknown check 'exact_dupes'" in msg and "exact_duplicate" in msg and "label_issue" in msg


def test_unknown_check_setting_names_line_and_allowed_settings() -> None:
    msg = error_of("checks:\n  near_duplicate:\n    action: drop\n    min_jacard: 0.8\n")
    assert msg.startswith("curata.yaml:4:")
    assert "unknown key 'min_jacard' in checks.near_duplicate" in msg and "min_jaccard" in msg


@pytest.mark.parametrize(
    ("setting", "value", "expected"),
    [
        ("min_jaccard", "1.5", "(0, 1]"),
        ("min_jaccard", "0", "(0, 1]"),
        ("min_jaccard", "high", "(0, 1]"),
        ("max_distance", "2.5", "an integer"),
    ],
)
def test_bad_threshold_names_line_and_range(setting: str, value: str, expected: str) -> None:
    msg = error_of(f"checks:\n  near_duplicate:\n    action: drop\n    {setting}: {value}\n")
    assert msg.startswith("curata.yaml:4:")
    assert f"checks.near_duplicate.{setting} must be" in msg and expected in msg


def test_bad_action_and_misplaced_relabel_or_redact() -> None:
    msg = error_of("checks:\n  outlier: {action: delete}\n")
    assert msg.startswith("curata.yaml:2:") and "drop, flag, keep, relabel, redact" in msg
    msg = error_of("checks:\n  outlier:\n    action: relabel\n")
    assert msg.startswith("curata.yaml:3:") and "only applies to label_issue" in msg
    msg = error_of("checks:\n  empty: {action: redact}\n")
    assert "only applies to pii" in msg
    msg = error_of("checks:\n  label_issue:\n    action: relabel\n")
    assert msg.startswith("curata.yaml:3:") and "min_confidence" in msg
    msg = error_of("checks:\n  label_issue: {action: relabel, min_confidence: 1.2}\n")
    assert msg.startswith("curata.yaml:2:") and "[0, 1]" in msg
    msg = error_of("default_action: relabel\n")
    assert msg.startswith("curata.yaml:1:")


def test_yaml_syntax_error_and_repeated_key_name_the_line() -> None:
    msg = error_of("checks:\n  exact_duplicate: {action: drop\n  near_duplicate: {action: flag}\n")
    assert re.match(r"curata\.yaml:\d+: not valid YAML", msg)
    msg = error_of("checks:\n  empty: {action: drop}\n  empty: {action: flag}\n")
    assert msg.startswith("curata.yaml:3:") and "given twice (first on line 2)" in msg


def test_shorthand_enabled_and_mapping_onto_audit_settings(tmp_path: Path) -> None:
    (tmp_path / "probs.parquet").write_bytes(b"")
    path = tmp_path / "curata.yaml"
    path.write_text(
        "audit:\n"
        "  encoder: tfidf-svd\n"
        "  pred_probs: probs.parquet\n"
        "checks:\n"
        "  exact_duplicate: drop\n"
        "  near_duplicate: {action: drop, min_jaccard: 0.7, max_distance: 40}\n"
        "  semantic_duplicate: {action: flag, min_cosine: 0.9}\n"
        "  contamination: {action: drop, modes: [exact, ngram], ngram: 8}\n"
        "  outlier: {action: flag, outlier_k: 7}\n"
        "  class_imbalance: {action: keep, rare_class_ratio: 0.2}\n"
        "  underrepresented: {action: keep, enabled: false}\n"
    )
    pol = load_policy(path)
    assert pol.action_for("exact_duplicate").action == "drop"
    assert pol.action_for("low_quality").action == "flag"  # not listed: default_action
    s = pol.audit_settings()
    assert s.signals.minhash.min_jaccard == 0.7
    assert s.signals.image.max_distance == 40
    assert s.semantic.min_cosine == 0.9
    assert s.contamination.modes == ("exact", "ngram") and s.contamination.ngram == 8
    assert s.model.outlier_k == 7 and s.model.rare_class_ratio == 0.2
    assert s.embed.encoder == "tfidf-svd"
    assert s.pred_probs == str(tmp_path.resolve() / "probs.parquet")
    assert s.skip == ("underrepresented",)


def test_parallel_checks_are_accepted_as_keys() -> None:
    pol = parse_policy(
        "checks:\n  pii: {action: redact}\n  licence: {action: drop, allow: [MIT], deny: []}\n"
    )
    assert pol.action_for("pii").action == "redact"
    assert pol.action_for("licence").settings == {"allow": ["MIT"], "deny": []}
    msg = error_of("checks:\n  licence: {action: drop, allow: MIT}\n")
    assert msg.startswith("curata.yaml:2:") and "a list of names" in msg


def test_licence_ids_are_validated_when_the_licence_module_exists() -> None:
    pytest.importorskip("curata.licences")
    msg = error_of("checks:\n  licence:\n    action: drop\n    deny: [Not-A-Licence-xyz]\n")
    assert msg.startswith("curata.yaml:4:") and "Not-A-Licence-xyz" in msg


def test_policy_command_validates_a_file(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("checks:\n  exact_duplicate: {action: drop}\n")
    res = runner.invoke(app, ["policy", str(good)])
    assert res.exit_code == 0 and "exact_duplicate" in res.output and "valid" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("checks:\n  exact_duplicate: {action: drop}\n  nope: {action: drop}\n")
    res = runner.invoke(app, ["policy", str(bad)])
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{bad}:3: unknown check 'nope'" in lines[0]
    assert "Traceback" not in res.output
    res = runner.invoke(app, ["policy", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and "no such policy file" in res.output
