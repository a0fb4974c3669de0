"""Neuronpedia's importer, as rules applied to an export folder (no actstore import).

Read from github.com/hijohnnylin/neuronpedia (commit ebb8426f, 2026-08-20):
``apps/webapp/app/api/admin/import/route.ts`` (the order, which files are required),
``apps/webapp/lib/db/import.ts`` (``importJsonlString``: columns from the FIRST line's keys,
``jsonb_to_recordset``, ``ON CONFLICT DO NOTHING``) and ``apps/webapp/prisma/schema.prisma``
(columns, NOT NULL without default, keys). ``docs/neuronpedia.md`` states them in prose.

:func:`simulate_import` returns the rows each table keeps and every problem: an error that stops
the import, or data the importer would drop without a word.
"""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path
from typing import Any

SEEDED_USERS = {"clkht01d40000jv08hvalcvly"}  # apps/webapp/prisma/seed.ts

S, F, INT, B, SL, FL, IL, J, T = "str", "float", "int", "bool", "str[]", "float[]", "int[]", "json", "time"
# table -> (columns with their kind, required: NOT NULL and no default)
TABLES: dict[str, tuple[dict[str, str], set[str]]] = {
    "Model": ({"id": S, "displayNameShort": S, "displayName": S, "creatorId": S, "tlensId": S, "openRouterId": S, "dimension": INT,
               "thinking": B, "visibility": S, "defaultSourceSetName": S, "defaultSourceId": S, "defaultGraphSourceSetName": S,
               "inferenceEnabled": B, "instruct": B, "layers": INT, "neuronsPerLayer": INT, "createdAt": T, "owner": S,
               "updatedAt": T, "website": S}, {"id", "creatorId", "layers", "neuronsPerLayer", "owner"}),
    "SourceSet": ({"modelId": S, "name": S, "hasDashboards": B, "allowInferenceSearch": B, "visibility": S, "description": S,
                   "type": S, "creatorName": S, "urls": SL, "creatorEmail": S, "creatorId": S, "releaseName": S, "hasGraphs": B,
                   "graphEnabled": B, "similarityMatrixEnabled": B, "defaultRange": INT, "defaultShowBreaks": B, "showDfa": B,
                   "showCorrelated": B, "showHeadAttribution": B, "showUmap": B, "createdAt": T},
                  {"modelId", "name", "description", "creatorName", "creatorId"}),
    "Source": ({"id": S, "modelId": S, "hasDashboards": B, "inferenceEnabled": B, "saelensConfig": J, "saelensRelease": S,
                "saelensSaeId": S, "hfRepoId": S, "hfFolderId": S, "visibility": S, "setName": S, "creatorId": S, "hasUmap": B,
                "hasUmapLogSparsity": B, "hasUmapClusters": B, "num_prompts": INT, "num_tokens_in_prompt": INT, "dataset": S,
                "notes": S, "cosSimMatchModelId": S, "cosSimMatchSourceId": S, "createdAt": T}, {"id", "modelId", "setName", "creatorId"}),
    "Neuron": ({"modelId": S, "layer": S, "index": S, "sourceSetName": S, "creatorId": S, "createdAt": T, "maxActApprox": F,
                "hasVector": B, "vector": FL, "vectorLabel": S, "vectorDefaultSteerStrength": F, "hookName": S,
                "topkCosSimIndices": IL, "topkCosSimValues": FL, "neuron_alignment_indices": IL, "neuron_alignment_values": FL,
                "neuron_alignment_l1": FL, "correlated_neurons_indices": IL, "correlated_neurons_pearson": FL,
                "correlated_neurons_l1": FL, "correlated_features_indices": IL, "correlated_features_pearson": FL,
                "correlated_features_l1": FL, "neg_str": SL, "neg_values": FL, "pos_str": SL, "pos_values": FL,
                "frac_nonzero": F, "freq_hist_data_bar_heights": FL, "freq_hist_data_bar_values": FL,
                "logits_hist_data_bar_heights": FL, "logits_hist_data_bar_values": FL, "decoder_weights_dist": FL,
                "umap_cluster": INT, "umap_log_feature_sparsity": F, "umap_x": F, "umap_y": F}, {"modelId", "layer", "index"}),
    "Activation": ({"id": S, "tokens": SL, "dataIndex": S, "index": S, "layer": S, "modelId": S, "dataSource": S, "maxValue": F,
                    "maxValueTokenIndex": INT, "minValue": F, "values": FL, "dfaValues": FL, "dfaTargetIndex": INT, "dfaMaxValue": F,
                    "zQIndices": IL, "zKIndices": IL, "zValues": FL, "creatorId": S, "createdAt": T, "lossValues": FL,
                    "logitContributions": S, "binMin": F, "binMax": F, "binContains": F, "qualifyingTokenIndex": INT},
                   {"tokens", "index", "layer", "modelId", "maxValue", "maxValueTokenIndex", "minValue", "values", "creatorId"}),
    "Explanation": ({"id": S, "modelId": S, "layer": S, "index": S, "description": S, "authorId": S, "triggeredByUserId": S,
                     "notes": S, "scoreV1": F, "scoreV2": F, "umap_x": F, "umap_y": F, "umap_cluster": INT,
                     "umap_log_feature_sparsity": F, "typeName": S, "explanationModelName": S, "createdAt": T, "updatedAt": T},
                    {"modelId", "layer", "index", "description", "authorId"}),
}
# route.ts: metadata files are required (a missing one stops the import); table files by folder
METADATA = {"model.jsonl": "Model", "sourceset.jsonl": "SourceSet", "source.jsonl": "Source"}
FOLDERS = {"features": "Neuron", "activations": "Activation", "explanations": "Explanation"}
PRIMARY_KEY = {"Model": ("id",), "SourceSet": ("modelId", "name"), "Source": ("modelId", "id"),
               "Neuron": ("modelId", "layer", "index"), "Activation": ("id",), "Explanation": ("id",)}


def _kind_ok(value: Any, kind: str) -> bool:
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    checks = {S: lambda v: isinstance(v, str), F: number, INT: lambda v: isinstance(v, int) and not isinstance(v, bool),
              B: lambda v: isinstance(v, bool), SL: lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
              FL: lambda v: isinstance(v, list) and all(number(x) for x in v),
              IL: lambda v: isinstance(v, list) and all(isinstance(x, int) for x in v), J: lambda v: True,
              T: lambda v: isinstance(v, str)}
    return value is None or checks[kind](value)


def _lines(path: Path) -> list[dict[str, Any]]:
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def simulate_import(folder: Path, *, users: set[str] = SEEDED_USERS) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """The rows each table would keep after importing ``folder`` (``<model>/<source>``) into an
    empty database holding ``users``, and the problems found. An import stopped by an error
    keeps only what came before it (route.ts has no transaction)."""
    db: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
    problems: list[str] = []
    try:
        for name, table in METADATA.items():
            if not (folder / name).exists():
                raise _Stop(f"{name} is missing: route.ts stops before the features")
            for row in _lines(folder / name):  # prisma create: an unknown field is an error
                unknown = set(row) - set(TABLES[table][0])
                if unknown:
                    raise _Stop(f"{name}: fields {sorted(unknown)} are not columns of {table}: prisma refuses the row")
                _insert(db, table, row, users, problems, name)
        for sub, table in FOLDERS.items():
            for path in sorted((folder / sub).glob("*.jsonl.gz")):
                _copy(db, table, _lines(path), users, problems, f"{sub}/{path.name}")
    except _Stop as stop:
        problems.append(f"import stops: {stop}")
    return db, problems


class _Stop(Exception):
    pass


def _copy(db: dict[str, list[dict[str, Any]]], table: str, lines: list[dict[str, Any]], users: set[str], problems: list[str],
          name: str) -> None:
    """import.ts: columns = first line's keys that are columns; jsonb_to_recordset; ON CONFLICT DO NOTHING."""
    if not lines:
        return
    columns, _ = TABLES[table]
    first = list(lines[0])
    ignored = [k for k in first if k not in columns]
    if ignored:
        problems.append(f"{name}: keys {ignored} are not columns of {table}: dropped")
    keep = [k for k in first if k in columns]
    for i, line in enumerate(lines):
        if set(line) != set(first):
            problems.append(f"{name} line {i + 1}: keys differ from the first line's ({sorted(set(line) ^ set(first))}): "
                            "missing ones become NULL, extra ones are dropped")
        _insert(db, table, {k: line.get(k) for k in keep}, users, problems, name)


def _insert(db: dict[str, list[dict[str, Any]]], table: str, row: dict[str, Any], users: set[str], problems: list[str], name: str) -> None:
    columns, required = TABLES[table]
    bad = [k for k, v in row.items() if k in columns and not _kind_ok(v, columns[k])]
    if bad:
        raise _Stop(f"{name}: {bad} have the wrong JSON type for {table}: the insert fails")
    missing = [k for k in required if row.get(k) is None and not (k == "id" and table in {"Activation", "Explanation"})]
    if missing:
        raise _Stop(f"{name}: NOT NULL {missing} of {table} missing: the insert fails")
    fk = _foreign_key_error(db, table, row, users)
    if fk:
        raise _Stop(f"{name}: {fk}: the insert fails")
    key = tuple(row.get(k) for k in PRIMARY_KEY[table])
    if None not in key and any(tuple(r.get(k) for k in PRIMARY_KEY[table]) == key for r in db[table]):
        problems.append(f"{name}: {table} {key} repeats: ON CONFLICT DO NOTHING drops it" if table in {"Neuron", "Activation",
                        "Explanation"} else f"{name}: {table} {key} exists: not imported again")
        return
    db[table].append(row)


def _foreign_key_error(db: dict[str, list[dict[str, Any]]], table: str, row: dict[str, Any], users: set[str]) -> str | None:
    def has(t: str, **kv: Any) -> bool:
        return any(all(r.get(k) == v for k, v in kv.items()) for r in db[t])

    for user_field in ("creatorId", "authorId"):
        if row.get(user_field) is not None and row[user_field] not in users:
            return f"{user_field} {row[user_field]!r} is not a user"
    checks = {
        "SourceSet": [("Model", {"id": row.get("modelId")})],
        "Source": [("SourceSet", {"modelId": row.get("modelId"), "name": row.get("setName")})],
        "Neuron": [("Model", {"id": row.get("modelId")}), ("Source", {"modelId": row.get("modelId"), "id": row.get("layer")})]
                  + ([("SourceSet", {"modelId": row.get("modelId"), "name": row["sourceSetName"]})] if row.get("sourceSetName") else []),
        "Activation": [("Neuron", {"modelId": row.get("modelId"), "layer": row.get("layer"), "index": row.get("index")})],
        "Explanation": [("Neuron", {"modelId": row.get("modelId"), "layer": row.get("layer"), "index": row.get("index")})],
    }
    for target, kv in checks.get(table, []):
        if not has(target, **kv):
            return f"no {target} {kv}"
    return None


def value_conventions(db: dict[str, list[dict[str, Any]]]) -> list[str]:
    """What the webapp's pages assume of the values (components/activations-list.tsx,
    components/feature-stats.tsx, SAEDashboard's export)."""
    out = []
    for a in db["Activation"]:
        where = a.get("id")
        values, q = a["values"], a.get("qualifyingTokenIndex")
        if len(a["tokens"]) != len(values) or values[a["maxValueTokenIndex"]] != a["maxValue"] or min(values) != a["minValue"]:
            out.append(f"{where}: tokens/values/maxValue/minValue disagree")
        contains = a.get("binContains")
        if contains is None or not (contains == -1 or 0 <= contains <= 1):
            out.append(f"{where}: binContains {contains} is neither -1 (top example) nor a fraction")
        if contains == -1 and a.get("binMin") != -1:
            out.append(f"{where}: a top example has binMin {a.get('binMin')} (SAEDashboard: -1)")
        if contains != -1 and (q is None or not a["binMin"] <= values[q] <= a["binMax"]):
            out.append(f"{where}: qualifyingTokenIndex {q} does not point at a value in [binMin, binMax]")
    for n in db["Neuron"]:
        bars = n.get("freq_hist_data_bar_values") or []
        if not 0 <= n.get("frac_nonzero", 0) <= 1 or len(bars) != len(n.get("freq_hist_data_bar_heights") or []):
            out.append(f"{n['index']}: frac_nonzero or histogram lengths")
        steps = [b - a for a, b in itertools.pairwise(bars)]
        if steps and max(steps) - min(steps) > 1e-9 * max(1.0, abs(max(steps))):
            out.append(f"{n['index']}: histogram bars are not equally spaced (plotted on a linear axis)")
    return out
