"""The curation policy (``curata.yaml``): which checks run, with which settings, and what each does.

A policy is read from YAML with a loader that remembers where every key sits, so a mistake is
reported as ``curata.yaml:12: ...`` with the allowed names or range. Validation happens once, here;
the rest of curata works with the frozen ``Policy``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from curata.errors import ConfigError

Action = Literal["drop", "flag", "keep", "relabel", "redact"]
ACTIONS: tuple[Action, ...] = ("drop", "flag", "keep", "relabel", "redact")
#: Checks written in parallel with this module: accepted as policy keys before they are installed.
PENDING_CHECKS: tuple[str, ...] = ("pii", "licence")
#: Checks whose findings name a record and the representative it repeats (``related_id``).
DUPLICATE_CHECKS: tuple[str, ...] = ("exact_duplicate", "near_duplicate", "semantic_duplicate")
#: Actions only some checks can carry out: the evidence they need comes from these checks alone.
ACTION_CHECKS: dict[str, tuple[str, ...]] = {"relabel": ("label_issue",), "redact": ("pii",)}

DEFAULT_POLICY_YAML = """\
# curata policy: what `curata curate` does with the findings of each check.
#
# Actions: drop     remove the record from the new version (the source is never touched)
#          flag     keep it, listed in the plan for review
#          keep     keep it, not listed (the check still runs and its findings are stored)
#          relabel  (label_issue) take the suggested label when its probability >= min_confidence;
#                   findings below it are flagged
#          redact   (pii) replace each detected span with [TYPE] and listed cells with [REDACTED]
#
# Duplicates (exact, near, semantic) with `drop` keep one representative per cluster: the copy in
# the earliest split (train, then val, then test), then the first in row order; the other copies
# are dropped.
# Split leakage with `drop` removes the copies in the earlier split (the training side) and keeps
# the copy in the later split (test, else val), so evaluation data is never lost to deduplication.
# Checks not listed get `default_action`; `enabled: false` stops a check from running.
version: 1
default_action: flag
audit:
  encoder: auto           # auto | tfidf-svd | minilm | pixels | efficientnet-lite0 | ssl | tabular
  pred_probs: null        # your model's out-of-sample probabilities (.npy or table); else curata's own
  references: []          # benchmark datasets checked for contamination
data:                     # columns playing each role (null: detected)
  id_column: null
  text_column: null
  image_column: null
  label_column: null
  split_column: null
  license_column: null
  source_column: null
checks:
  corrupt: {action: drop}
  empty: {action: drop}
  missing_label: {action: flag}
  duplicate_id: {action: flag}
  exact_duplicate: {action: drop}
  near_duplicate:
    action: drop
    min_jaccard: 0.8      # text: MinHash Jaccard from which two records are near duplicates
  semantic_duplicate:
    action: flag
    min_cosine: auto      # embedding cosine from which records are duplicates (auto: from the data)
  split_leakage: {action: drop}
  conflicting_labels: {action: flag}
  contamination: {action: drop}
  label_issue:
    action: relabel
    min_confidence: 0.95  # suggested label's predicted probability needed to accept it
  outlier: {action: flag}
  low_quality: {action: flag}
  class_imbalance: {action: keep}
  underrepresented: {action: keep}
  pii: {action: redact}
  licence:
    action: flag
    allow: null           # SPDX ids accepted (null: any licence not denied; []: none)
    deny: []              # SPDX ids (or obligations such as non-commercial) refused
"""

_TOP_KEYS = ("version", "default_action", "audit", "data", "checks")
_AUDIT_KEYS = ("encoder", "pred_probs", "references", "ood_reference", "embeddings", "embedding_column")
_DATA_KEYS = (
    "id_column",
    "text_column",
    "image_column",
    "label_column",
    "split_column",
    "license_column",
    "source_column",
)
_COMMON_CHECK_KEYS = ("action", "enabled")


@dataclass(frozen=True)
class _Spec:
    """One check setting: its type, the allowed range and a word on what it means."""

    kind: Literal["float", "int", "names", "float_or_auto"]
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.kind == "names":
            return f"a list of {', '.join(self.choices)}" if self.choices else "a list of names"
        what = "an integer" if self.kind == "int" else "a number"
        if self.lo is not None and self.hi is not None:
            rng = f"{'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
            what += f" in {rng}"
        elif self.lo is not None:
            what += f" {'>' if self.lo_open else '>='} {self.lo:g}"
        return what + (" or auto" if self.kind == "float_or_auto" else "")


#: Settings a check accepts beside ``action``/``enabled``; they map onto ``AuditSettings``.
CHECK_SETTINGS: dict[str, dict[str, _Spec]] = {
    "near_duplicate": {
        "min_jaccard": _Spec("float", 0.0, 1.0, lo_open=True),
        "max_distance": _Spec("int", 0, 256),
    },
    "semantic_duplicate": {"min_cosine": _Spec("float_or_auto", 0.0, 1.0, lo_open=True)},
    "contamination": {
        "modes": _Spec("names", choices=("exact", "near", "ngram")),
        "ngram": _Spec("int", 1),
        "min_ngram_overlap": _Spec("float", 0.0, 1.0, hi_open=True),
    },
    "outlier": {
        "outlier_k": _Spec("int", 1),
        "outlier_min_z": _Spec("float", 0.0, lo_open=True),
        "outlier_min_ratio": _Spec("float", 1.0),
        "ood_fdr": _Spec("float", 0.0, 1.0, lo_open=True, hi_open=True),
    },
    "class_imbalance": {
        "rare_class_ratio": _Spec("float", 0.0, 1.0, lo_open=True, hi_open=True),
        "min_class_records": _Spec("int", 1),
    },
    "underrepresented": {"cluster_min_share": _Spec("float", 0.0, 1.0, lo_open=True, hi_open=True)},
    "label_issue": {"min_confidence": _Spec("float", 0.0, 1.0)},
    "licence": {"allow": _Spec("names"), "deny": _Spec("names")},
}


@dataclass(frozen=True)
class CheckPolicy:
    """What one check does: its ``action``, whether it runs, and its own settings."""

    action: Action
    enabled: bool = True
    settings: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain form, as written in version.json."""
        return {"action": self.action, "enabled": self.enabled, **dict(self.settings)}


@dataclass(frozen=True)
class AuditOptions:
    """How the audit feeding the plan runs (paths already resolved against the policy's folder)."""

    encoder: str = "auto"
    pred_probs: str | None = None
    references: tuple[str, ...] = ()
    ood_reference: str | None = None
    embeddings: str | None = None
    embedding_column: str | None = None


@dataclass(frozen=True)
class DataOptions:
    """Columns the user names for each role (None: detected)."""

    id_column: str | None = None
    text_column: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    split_column: str | None = None
    license_column: str | None = None
    source_column: str | None = None

    def merged(self, **overrides: str | None) -> DataOptions:
        """A copy with the given (non-None) command-line options taking precedence."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def as_kwargs(self) -> dict[str, str | None]:
        """The options as ``read_dataset`` keyword arguments."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Policy:
    """A validated curation policy; ``action_for`` answers for any check, listed or not."""

    checks: Mapping[str, CheckPolicy] = field(default_factory=dict)
    default_action: Action = "flag"
    audit: AuditOptions = field(default_factory=AuditOptions)
    data: DataOptions = field(default_factory=DataOptions)
    source: str = "<default policy>"

    def action_for(self, check: str) -> CheckPolicy:
        """The policy of ``check``: its own entry, else ``default_action`` with no settings."""
        return self.checks.get(check) or CheckPolicy(self.default_action)

    def setting(self, check: str, name: str, default: Any = None) -> Any:
        """One setting of ``check`` (``default`` when the policy does not give it)."""
        return self.action_for(check).settings.get(name, default)

    def as_dict(self) -> dict[str, Any]:
        """Plain form, as written in version.json (every check listed, settings beside actions)."""
        return {
            "version": 1,
            "default_action": self.default_action,
            "audit": {**dataclasses.asdict(self.audit), "references": list(self.audit.references)},
            "data": self.data.as_kwargs(),
            "checks": {name: cp.as_dict() for name, cp in self.checks.items()},
            "source": self.source,
        }

    def audit_settings(self) -> Any:
        """The ``AuditSettings`` this policy asks for (checks' settings mapped onto their fields)."""
        from curata.audit import AuditSettings
        from curata.checks import registered_checks
        from curata.checks.contamination import ContaminationSettings
        from curata.checks.embedding import ModelCheckSettings
        from curata.checks.semantic import SemanticSettings
        from curata.signals.embed import EmbedSettings
        from curata.signals.image import ImageHashSettings
        from curata.signals.pipeline import SignalSettings
        from curata.signals.text import MinHashSettings

        known = registered_checks()
        try:
            minhash = MinHashSettings()
            image = ImageHashSettings()
            if (j := self.setting("near_duplicate", "min_jaccard")) is not None:
                minhash = replace(minhash, min_jaccard=float(j))
            if (d := self.setting("near_duplicate", "max_distance")) is not None:
                image = replace(image, max_distance=int(d))
            contamination_kw: dict[str, Any] = dict(self.action_for("contamination").settings)
            if "modes" in contamination_kw:
                contamination_kw["modes"] = tuple(contamination_kw["modes"])
            contamination = ContaminationSettings(**contamination_kw)
            model_fields = {f.name for f in dataclasses.fields(ModelCheckSettings)}
            model_kwargs = {
                k: v
                for check in ("outlier", "class_imbalance", "underrepresented")
                for k, v in self.action_for(check).settings.items()
                if k in model_fields
            }
            cosine = self.setting("semantic_duplicate", "min_cosine")
            settings = AuditSettings(
                signals=replace(SignalSettings(), minhash=minhash, image=image),
                contamination=contamination,
                embed=EmbedSettings(
                    encoder=self.audit.encoder,
                    embeddings_file=self.audit.embeddings,
                    embedding_column=self.audit.embedding_column,
                ),
                model=ModelCheckSettings(**model_kwargs),
                pred_probs=self.audit.pred_probs,
                ood_reference=self.audit.ood_reference,
                semantic=SemanticSettings(min_cosine=None if cosine in (None, "auto") else float(cosine)),
                skip=tuple(n for n, cp in self.checks.items() if not cp.enabled and n in known),
            )
        except ConfigError as exc:
            raise ConfigError(f"{self.source}: {exc}") from None
        return _with_pending_settings(settings, self)


def licence_settings_value(settings: Mapping[str, Any]) -> Any:
    """The licence check's settings object for ``{allow, deny}`` (the plain dict when its module is
    not installed). Raises ConfigError for licence ids it does not know."""
    value = {k: (None if v is None else list(v)) for k, v in settings.items()}
    try:
        from curata.licences import LicenceSettings
    except ImportError:
        return value
    return LicenceSettings.from_value(value)


def licence_settings_reach_audit() -> bool:
    """Whether this curata's AuditSettings carries licence settings to the check."""
    from curata.audit import AuditSettings

    return any(f.name in ("licence", "license") for f in dataclasses.fields(AuditSettings))


def _with_pending_settings(settings: Any, policy: Policy) -> Any:
    """Pass the licence check's allow/deny lists on, when this curata's AuditSettings carries them.

    The licence check reads ``context.settings["licence"]``; an AuditSettings without a field for it
    is left alone (``curate`` then warns that the lists had no effect).
    """
    lic = dict(policy.action_for("licence").settings)
    if not lic:
        return settings
    for f in dataclasses.fields(settings):
        if f.name in ("licence", "license"):
            return replace(settings, **{f.name: licence_settings_value(lic)})
    return settings


# ---------------------------------------------------------------- YAML with line numbers


class _Map(dict[Any, Any]):
    """A YAML mapping that remembers its own line and the line of each key (1-based)."""

    line: int = 0
    key_lines: dict[Any, int]


class _LineLoader(yaml.SafeLoader):
    """A safe loader whose mappings are ``_Map`` and which refuses repeated keys."""


def _construct_map(loader: _LineLoader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    out = _Map()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            hash(key)
        except TypeError:
            raise ConfigError(f"line {line}: a key must be a plain name") from None
        if key in out:
            raise ConfigError(f"line {line}: '{key}' is given twice (first on line {out.key_lines[key]})")
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = line
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)


class _Reader:
    """Validates the parsed YAML, building error messages as ``SOURCE:LINE: what, allowed``."""

    def __init__(self, source: str, base: Path | None) -> None:
        self.source = source
        self.base = base

    def fail(self, line: int, message: str) -> ConfigError:
        return ConfigError(f"{self.source}:{line}: {message}")

    def mapping(self, value: Any, where: str, line: int) -> _Map:
        if value is None:
            empty = _Map()
            empty.line, empty.key_lines = line, {}
            return empty
        if not isinstance(value, _Map):
            raise self.fail(line, f"{where} must be a mapping of names to values, got {_kind(value)}")
        return value

    def keys(self, m: _Map, allowed: tuple[str, ...], where: str) -> None:
        for key in m:
            if key not in allowed:
                raise self.fail(
                    m.key_lines[key], f"unknown key '{key}' in {where}; allowed: {', '.join(allowed)}"
                )

    def optional_str(self, m: _Map, key: str, where: str) -> str | None:
        value = m.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(m.key_lines[key], f"{where}.{key} must be a name or null, got {_kind(value)}")
        return value

    def path(self, m: _Map, key: str, where: str) -> str | None:
        value = self.optional_str(m, key, where)
        return None if value is None else self._resolve(value)

    def _resolve(self, value: str) -> str:
        p = Path(value).expanduser()
        if not p.is_absolute() and self.base is not None:
            p = self.base / p
        return str(p)

    def action(self, value: Any, where: str, line: int) -> Action:
        if value not in ACTIONS:
            raise self.fail(line, f"{where} must be one of {', '.join(ACTIONS)}, got {value!r}")
        return cast(Action, value)

    def setting(self, spec: _Spec, value: Any, where: str, line: int) -> Any:
        bad = self.fail(line, f"{where} must be {spec.describe()}, got {value!r}")
        if spec.kind == "names":
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise bad
            if spec.choices and any(v not in spec.choices for v in value):
                raise bad
            return list(value)
        if spec.kind == "float_or_auto" and value == "auto":
            return "auto"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        if spec.kind == "int" and not isinstance(value, int):
            raise bad
        x = float(value)
        if x != x:  # NaN passes no range
            raise bad
        if spec.lo is not None and (x < spec.lo or (spec.lo_open and x == spec.lo)):
            raise bad
        if spec.hi is not None and (x > spec.hi or (spec.hi_open and x == spec.hi)):
            raise bad
        return int(value) if spec.kind == "int" else float(value)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def known_check_names() -> tuple[str, ...]:
    """Checks a policy may name: the registered ones plus those being written in parallel."""
    from curata.checks import registered_checks

    names = list(registered_checks())
    return (*names, *(n for n in PENDING_CHECKS if n not in names))


def parse_policy(text: str, source: str = "curata.yaml", base: Path | None = None) -> Policy:
    """Validate policy YAML ``text``; errors name ``source`` and the line (``curata.yaml:7: ...``)."""
    try:
        raw = yaml.load(text, Loader=_LineLoader)
    except ConfigError as exc:
        raise ConfigError(f"{source}:{str(exc).removeprefix('line ')}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise ConfigError(f"{source}:{line}: not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    r = _Reader(source, base)
    top = r.mapping(raw, "the policy", 1)
    r.keys(top, _TOP_KEYS, "the policy")
    if "version" in top and top["version"] != 1:
        raise r.fail(top.key_lines["version"], f"version must be 1, got {top['version']!r}")
    default_action: Action = "flag"
    if "default_action" in top:
        default_action = r.action(top["default_action"], "default_action", top.key_lines["default_action"])
        if default_action in ACTION_CHECKS:
            raise r.fail(
                top.key_lines["default_action"],
                f"default_action cannot be {default_action}: only {', '.join(ACTION_CHECKS[default_action])} "
                "can; use drop, flag or keep",
            )

    audit_map = r.mapping(top.get("audit"), "audit", top.key_lines.get("audit", 1))
    r.keys(audit_map, _AUDIT_KEYS, "audit")
    references = audit_map.get("references") or []
    if not isinstance(references, list) or not all(isinstance(p, str) and p for p in references):
        raise r.fail(
            audit_map.key_lines.get("references", audit_map.line), "audit.references must be a list of paths"
        )
    encoder = r.optional_str(audit_map, "encoder", "audit") or "auto"
    audit = AuditOptions(
        encoder=encoder,
        pred_probs=r.path(audit_map, "pred_probs", "audit"),
        references=tuple(r._resolve(p) for p in references),
        ood_reference=r.path(audit_map, "ood_reference", "audit"),
        embeddings=r.path(audit_map, "embeddings", "audit"),
        embedding_column=r.optional_str(audit_map, "embedding_column", "audit"),
    )
    from curata.signals.embed import EmbedSettings

    try:
        EmbedSettings(
            encoder=encoder, embeddings_file=audit.embeddings, embedding_column=audit.embedding_column
        )
    except ConfigError as exc:
        line = audit_map.key_lines.get("encoder", audit_map.line)
        raise r.fail(line, f"audit: {exc}") from None

    data_map = r.mapping(top.get("data"), "data", top.key_lines.get("data", 1))
    r.keys(data_map, _DATA_KEYS, "data")
    data = DataOptions(**{k: r.optional_str(data_map, k, "data") for k in _DATA_KEYS})

    checks_map = r.mapping(top.get("checks"), "checks", top.key_lines.get("checks", 1))
    known = known_check_names()
    checks: dict[str, CheckPolicy] = {}
    for name, value in checks_map.items():
        line = checks_map.key_lines[name]
        if name not in known:
            raise r.fail(line, f"unknown check '{name}'; allowed: {', '.join(known)}")
        checks[name] = _check_policy(r, name, value, line)
    return Policy(checks=checks, default_action=default_action, audit=audit, data=data, source=source)


def _check_policy(r: _Reader, name: str, value: Any, line: int) -> CheckPolicy:
    where = f"checks.{name}"
    if isinstance(value, str):  # shorthand: `exact_duplicate: drop`
        entry = _Map({"action": value})
        entry.line, entry.key_lines = line, {"action": line}
    else:
        entry = r.mapping(value, where, line)
    specs = CHECK_SETTINGS.get(name, {})
    r.keys(entry, (*_COMMON_CHECK_KEYS, *specs), where)
    if "action" not in entry:
        raise r.fail(entry.line, f"{where} needs an action: one of {', '.join(ACTIONS)}")
    action = r.action(entry["action"], f"{where}.action", entry.key_lines["action"])
    if action in ACTION_CHECKS and name not in ACTION_CHECKS[action]:
        raise r.fail(
            entry.key_lines["action"],
            f"{where}.action: {action} only applies to {', '.join(ACTION_CHECKS[action])} "
            f"(it needs their evidence); use drop, flag or keep for {name}",
        )
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        raise r.fail(entry.key_lines["enabled"], f"{where}.enabled must be true or false, got {enabled!r}")
    settings = {
        key: r.setting(specs[key], entry[key], f"{where}.{key}", entry.key_lines[key])
        for key in entry
        if key in specs and entry[key] is not None
    }
    if name == "licence" and settings:
        try:
            licence_settings_value(settings)
        except ConfigError as exc:
            line_of = entry.key_lines.get("allow", entry.key_lines.get("deny", entry.line))
            raise r.fail(line_of, f"{where}: {exc}") from None
    if action == "relabel" and "min_confidence" not in settings:
        raise r.fail(entry.line, f"{where}: relabel needs min_confidence (e.g. 0.95)")
    return CheckPolicy(action=action, enabled=enabled, settings=settings)


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; relative paths in it are taken from its folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{p}: no such policy file; write one (curata policy --default > {p.name})"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read the policy ({exc})") from None
    return parse_policy(text, source=str(p), base=p.resolve().parent)


def default_policy() -> Policy:
    """The policy shipped with curata (``curata policy --default`` prints its text)."""
    return parse_policy(DEFAULT_POLICY_YAML, source="<default policy>")
