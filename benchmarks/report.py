"""From raw runs to one table: medians over repeats, our ratios to vLLM's server and to the
engine alone, and the issue's targets checked as PASS / FAIL / SKIP."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.targets import ENGINE, OURS, TARGET_LABELS, TARGETS, VLLM

METRICS = (
    "requests_per_s",
    "ttft_p50_s",
    "ttft_p99_s",
    "itl_p50_s",
    "e2e_p50_s",
    "e2e_p99_s",
    "api_cpu_s_per_req",
    "prompt_tokens_mean",
    "completion_tokens_mean",
)

# The targets (issue 7, raised by issue 16).
RPS_VS_VLLM_MIN = 1.3  # every image case
RPS_VS_VLLM_MIN_LARGE_JPEG = 2.0
LARGE_JPEG_CASES = ("c16-jpeg2048",)
TTFT_VS_VLLM_MAX = 0.8  # every case
RPS_VS_ENGINE_MIN = 0.85
ENGINE_CEILING_CASES = ("c16-jpeg512",)
API_CPU_VS_VLLM_MAX = 0.6  # every image case: the front end's own cost, whatever the engine


def medians(runs: Iterable[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{case: {target: {metric: median over repeats, "errors": total, "repeats": n}}}.

    A run is {"repeat", "target", "case", "summary"} with a loadgen Summary as a dict."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        grouped.setdefault((run["case"], run["target"]), []).append(run["summary"])
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for (case, target), summaries in grouped.items():
        row: dict[str, Any] = {}
        for metric in METRICS:
            values = [s[metric] for s in summaries if s.get(metric) is not None]
            row[metric] = statistics.median(values) if values else None
        row["errors"] = sum(s.get("errors", 0) for s in summaries)
        row["repeats"] = len(summaries)
        table.setdefault(case, {})[target] = row
    return table


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def ratios(case_row: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Ours over vLLM's server and over the engine alone: req/s (higher is better) and
    TTFT p50 (lower is better)."""
    ours = case_row.get(OURS, {})
    result = {}
    for other in (VLLM, ENGINE):
        theirs = case_row.get(other, {})
        result[f"rps_vs_{other}"] = _ratio(ours.get("requests_per_s"), theirs.get("requests_per_s"))
        result[f"ttft_vs_{other}"] = _ratio(ours.get("ttft_p50_s"), theirs.get("ttft_p50_s"))
    result["api_cpu_vs_vllm"] = _ratio(
        ours.get("api_cpu_s_per_req"), case_row.get(VLLM, {}).get("api_cpu_s_per_req")
    )
    return result


@dataclass
class Check:
    target: str  # the wording
    case: str
    value: float | None
    limit: float
    status: str  # PASS, FAIL or SKIP
    note: str = ""


def _check(name: str, case: str, value: float | None, limit: float, higher: bool) -> Check:
    if value is None:
        return Check(name, case, None, limit, "SKIP", "a target was not measured")
    passed = value >= limit if higher else value <= limit
    return Check(name, case, value, limit, "PASS" if passed else "FAIL")


def check_targets(
    table: dict[str, dict[str, dict[str, Any]]], image_cases: Sequence[str]
) -> list[Check]:
    """The issue's targets for the cases present. `image_cases` names the cases with images.
    A check fails outright when our server had request errors in that case."""
    checks = []
    for case, row in table.items():
        r = ratios(row)
        if case in image_cases:
            checks.append(
                _check(
                    f"req/s >= {RPS_VS_VLLM_MIN}x vLLM server",
                    case,
                    r["rps_vs_vllm"],
                    RPS_VS_VLLM_MIN,
                    higher=True,
                )
            )
            checks.append(
                _check(
                    f"API CPU/request <= {API_CPU_VS_VLLM_MAX}x vLLM server",
                    case,
                    r["api_cpu_vs_vllm"],
                    API_CPU_VS_VLLM_MAX,
                    higher=False,
                )
            )
        if case in LARGE_JPEG_CASES:
            checks.append(
                _check(
                    f"req/s >= {RPS_VS_VLLM_MIN_LARGE_JPEG}x vLLM server (2048² JPEG)",
                    case,
                    r["rps_vs_vllm"],
                    RPS_VS_VLLM_MIN_LARGE_JPEG,
                    higher=True,
                )
            )
        checks.append(
            _check(
                f"TTFT p50 <= {TTFT_VS_VLLM_MAX}x vLLM server",
                case,
                r["ttft_vs_vllm"],
                TTFT_VS_VLLM_MAX,
                higher=False,
            )
        )
        if case in ENGINE_CEILING_CASES:
            checks.append(
                _check(
                    f"req/s >= {RPS_VS_ENGINE_MIN}x engine alone",
                    case,
                    r["rps_vs_engine"],
                    RPS_VS_ENGINE_MIN,
                    higher=True,
                )
            )
    for check in checks:
        ours_errors = table[check.case].get(OURS, {}).get("errors", 0)
        vllm_errors = table[check.case].get(VLLM, {}).get("errors", 0)
        if ours_errors and check.status != "SKIP":
            check.status, check.note = "FAIL", f"our server had {ours_errors} request errors"
        elif vllm_errors:
            check.note = f"vLLM's server had {vllm_errors} request errors"
    return checks


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


HEADER = (
    "case",
    "target",
    "req/s",
    "TTFT p50 ms",
    "TTFT p99 ms",
    "ITL p50 ms",
    "e2e p50 ms",
    "API CPU ms/req",
    "errors",
    "req/s vs vLLM",
    "TTFT vs vLLM",
    "API CPU vs vLLM",
    "req/s vs engine",
    "TTFT vs engine",
)


def table_rows(table: dict[str, dict[str, dict[str, Any]]]) -> list[list[str]]:
    rows = []
    for case, row in table.items():
        r = ratios(row)
        for target in TARGETS:
            if target not in row:
                continue
            m = row[target]
            ours = target == OURS
            rows.append(
                [
                    case,
                    TARGET_LABELS[target],
                    _num(m["requests_per_s"]),
                    _ms(m["ttft_p50_s"]),
                    _ms(m["ttft_p99_s"]),
                    _ms(m["itl_p50_s"]),
                    _ms(m["e2e_p50_s"]),
                    _ms(m["api_cpu_s_per_req"]),
                    str(m["errors"]),
                    _times(r["rps_vs_vllm"]) if ours else "",
                    _times(r["ttft_vs_vllm"]) if ours else "",
                    _times(r["api_cpu_vs_vllm"]) if ours else "",
                    _times(r["rps_vs_engine"]) if ours else "",
                    _times(r["ttft_vs_engine"]) if ours else "",
                ]
            )
    return rows


def render_table(rows: Sequence[Sequence[str]], markdown: bool = False) -> str:
    lines = [list(HEADER), *[list(row) for row in rows]]
    if markdown:
        out = ["| " + " | ".join(lines[0]) + " |", "|" + "---|" * len(HEADER)]
        out += ["| " + " | ".join(line) + " |" for line in lines[1:]]
        return "\n".join(out) + "\n"
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in out) + "\n"


def render_checks(checks: Sequence[Check], markdown: bool = False) -> str:
    lines = []
    for c in checks:
        value = "-" if c.value is None else f"{c.value:.2f}x"
        note = f" ({c.note})" if c.note else ""
        line = f"{c.status:4}  {c.case:20} {c.target}: {value}{note}"
        lines.append(f"- `{line}`" if markdown else line)
    return "\n".join(lines) + "\n"


def token_warnings(table: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Targets that saw different prompt sizes in a case did not do the same work."""
    warnings = []
    for case, row in table.items():
        sizes = {
            t: row[t]["prompt_tokens_mean"]
            for t in row
            if row[t].get("prompt_tokens_mean") is not None
        }
        if sizes and max(sizes.values()) > 1.01 * min(sizes.values()):
            shown = ", ".join(f"{TARGET_LABELS[t]} {v:.0f}" for t, v in sizes.items())
            warnings.append(f"{case}: prompt tokens differ between targets ({shown})")
    return warnings


def build_report(runs: Sequence[dict[str, Any]], image_cases: Sequence[str]) -> dict[str, Any]:
    table = medians(runs)
    checks = check_targets(table, image_cases)
    loads = [run["load"] for run in runs if run.get("load") is not None]
    return {
        "load": [min(loads), statistics.median(loads), max(loads)] if loads else None,
        "medians": table,
        "ratios": {case: ratios(row) for case, row in table.items()},
        "checks": [asdict(c) for c in checks],
        "warnings": token_warnings(table),
    }


def render_report(report: dict[str, Any], markdown: bool = False) -> str:
    checks = [Check(**c) for c in report["checks"]]
    text = render_table(table_rows(report["medians"]), markdown)
    text += "\nTargets (issues 7 and 16, medians over repeats):\n" + render_checks(checks, markdown)
    if report.get("load"):
        low, middle, high = report["load"]
        text += (
            f"Machine load (1-minute load average after each case): median {middle:.1f}, "
            f"from {low:.1f} to {high:.1f}\n"
        )
    for warning in report["warnings"]:
        text += f"WARNING: {warning}\n"
    return text
