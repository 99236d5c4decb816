"""Croissant 1.0 metadata (JSON-LD, with the Responsible-AI fields curata knows) for a version folder.

The distribution lists the version's own Parquet files (manifest, plan, audit findings) with
their SHA-256 and a path relative to where ``croissant.json`` is written, so a Croissant reader
(``mlcroissant``) loads the manifest's records from it. The records' content stays in the source
data; the manifest carries each record's content hash.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pyarrow as pa

from curata.licences import spdx_url
from curata.report.card import DROP_ACTIONS, VersionFolder, load_version, pii_summary

CONFORMS_TO = "http://mlcommons.org/croissant/1.0"

#: The JSON-LD context of Croissant 1.0 (as its specification and reference datasets give it).
CROISSANT_CONTEXT: dict[str, Any] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}

PARQUET = "application/x-parquet"
#: The version's files described as record sets: (file, record set id, key column, description).
RECORD_FILES: tuple[tuple[str, str, str | None, str], ...] = (
    ("manifest.parquet", "records", "record_id", "One row per record of this version."),
    ("plan.parquet", "plan", None, "The curation actions that produced this version from its parent."),
    ("audit/findings.parquet", "findings", None, "Findings of the audit the plan was made from."),
)


def _data_type(typ: pa.DataType) -> str | None:
    """The Croissant data type of an Arrow type (None for nested types, left out)."""
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    if pa.types.is_boolean(typ):
        return "sc:Boolean"
    if pa.types.is_integer(typ):
        return "sc:Integer"
    if pa.types.is_floating(typ):
        return "sc:Float"
    if pa.types.is_timestamp(typ) or pa.types.is_date(typ):
        return "sc:Date"
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return "sc:Text"
    return None


def _file_id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def _record_set(
    file_id: str, set_id: str, schema: pa.Schema, key: str | None, description: str
) -> dict[str, Any]:
    fields = []
    for f in schema:
        data_type = _data_type(f.type)
        if data_type is None:
            continue
        fields.append(
            {
                "@type": "cr:Field",
                "@id": f"{set_id}/{f.name}",
                "name": f.name,
                "dataType": data_type,
                "source": {"fileObject": {"@id": file_id}, "extract": {"column": f.name}},
            }
        )
    record_set: dict[str, Any] = {
        "@type": "cr:RecordSet",
        "@id": set_id,
        "name": set_id,
        "description": description,
        "field": fields,
    }
    if key is not None and key in schema.names:
        record_set["key"] = {"@id": f"{set_id}/{key}"}
    return record_set


def _semver(version: VersionFolder) -> str:
    """``N.0.0`` for the N-th version in its chain, with the version id as build metadata."""
    depth = len(version.ancestry())
    build = re.sub(r"[^0-9A-Za-z-]+", "-", version.id).strip("-")
    return f"{depth}.0.0" + (f"+{build}" if build else "")


def _description(version: VersionFolder) -> str:
    n = version.manifest.num_rows
    source = version.info.get("source")
    text = f"{n:,} records, version {version.id} curated by curata {version.info.get('curata_version', '?')}"
    if source:
        text += f" from {source}"
    return text + ". See the dataset card (README.md) for composition, provenance and cleaning."


def _rai_fields(version: VersionFolder, log_head: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    collection = []
    if version.info.get("source"):
        collection.append(f"Records were read from {version.info['source']}.")
    s = version.sources
    if s is not None:
        collection.append(f"{s['records_with_source']} records name their source ({s['distinct']} distinct).")
    if collection:
        out["rai:dataCollection"] = " ".join(collection)
    steps: list[str] = []
    policy = version.info.get("policy")
    if policy:
        steps.append(f"curata policy: {_compact(policy)}")
    for action, by_check in version.plan_counts.items():
        detail = ", ".join(f"{c}: {n}" for c, n in by_check.items())
        steps.append(f"{action} {sum(by_check.values())} records ({detail})")
    if log_head:
        steps.append(f"Every step is recorded in curata's hash-chained audit log (head {log_head}).")
    if steps:
        out["rai:dataPreprocessingProtocol"] = steps
    pii = pii_summary(version)
    if pii["checked"]:
        redacted = pii["redacted"]
        dropped = pii["dropped"]
        out["rai:personalSensitiveInformation"] = [
            f"curata's pii check found {pii['findings']} findings in {pii['records']} records; "
            f"{redacted} were redacted and {dropped} dropped by the plan."
        ] + [f"{kind}: {n}" for kind, n in pii["by_kind"].items()]
    labels = version.present_values("label")
    if labels:
        counts = labels.most_common()
        (top, n_top), (low, n_low) = counts[0], counts[-1]
        out["rai:dataBiases"] = [
            f"Label balance: {len(counts)} classes; the largest ({top}, {n_top}) is "
            f"{n_top / max(n_low, 1):.1f} times the smallest ({low}, {n_low})."
        ]
    limits = []
    lic = version.licences
    if lic and (lic["missing"] or lic["unknown"]):
        limits.append(f"{lic['missing']} records state no licence and {lic['unknown']} an unrecognised one.")
    dropped_total = sum(n for a, c in version.plan_counts.items() if a in DROP_ACTIONS for n in c.values())
    if dropped_total:
        limits.append(f"{dropped_total} records of the parent were removed by curation.")
    if limits:
        out["rai:dataLimitations"] = limits
    return out


def _compact(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(", ", ": "), default=str)


def croissant_metadata(
    version: str | Path | VersionFolder, out_dir: str | Path | None = None, log_head: str | None = None
) -> dict[str, Any]:
    """The Croissant 1.0 JSON-LD for a version; file URLs are relative to ``out_dir`` (default: the
    version folder itself)."""
    v = version if not isinstance(version, str | Path) else load_version(version)
    base = Path(out_dir) if out_dir is not None else v.path
    doc: dict[str, Any] = {
        "@context": CROISSANT_CONTEXT,
        "@type": "sc:Dataset",
        "name": v.name,
        "description": _description(v),
        "conformsTo": CONFORMS_TO,
        "version": _semver(v),
        "citeAs": f"@misc{{{_file_id(v.name)}, title={{{v.name}}}, note={{curata version {v.id}}}}}",
    }
    if v.info.get("created_at"):
        doc["datePublished"] = str(v.info["created_at"])
    source = str(v.info.get("source") or "")
    if source.startswith(("http://", "https://")):
        doc["url"] = source
    lic = v.licences
    if lic and lic["spdx_ids"]:
        doc["license"] = [spdx_url(k) or k for k in lic["spdx_ids"]]
    distribution = []
    record_sets = []
    for name, set_id, key, description in RECORD_FILES:
        path = v.path / name
        table = {
            "manifest.parquet": v.manifest,
            "plan.parquet": v.plan,
            "audit/findings.parquet": v.findings,
        }[name]
        if table is None or name not in v.hashes:
            continue
        file_id = _file_id(name)
        distribution.append(
            {
                "@type": "cr:FileObject",
                "@id": file_id,
                "name": file_id,
                "description": description,
                "contentUrl": Path(os.path.relpath(path, base)).as_posix(),
                "encodingFormat": PARQUET,
                "sha256": v.hashes[name],
            }
        )
        record_sets.append(_record_set(file_id, set_id, table.schema, key, description))
    doc["distribution"] = distribution
    doc["recordSet"] = record_sets
    doc.update(_rai_fields(v, log_head))
    return doc
