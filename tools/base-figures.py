#!/usr/bin/env python3
"""Reproduces the base figures table of docs/measurements.md.

Runs `cargo spindle run` for each accelerator and CPU count given (default:
kvm and tcg at -smp 1, 2, 4, 16), keeps each JSON document in OUT_DIR, and
prints one Markdown table row per run. Usage:

    tools/base-figures.py [OUT_DIR] [accel:smp ...]     e.g. tools/base-figures.py /tmp/figures tcg:4 kvm:2
"""
import json
import pathlib
import subprocess
import sys

DEFAULT_RUNS = ["kvm:1", "kvm:2", "kvm:4", "kvm:16", "tcg:1", "tcg:2", "tcg:4", "tcg:16"]


def human(nanoseconds):
    value = float(nanoseconds)
    if value >= 1e6:
        return f"{value / 1e6:.2f} ms"
    if value >= 1e3:
        return f"{value / 1e3:.1f} µs"
    return f"{value:.0f} ns"


def percentiles(histograms, name):
    histogram = histograms.get(name)
    if histogram is None:
        return "–"
    return f"{human(histogram['p50'])} / {human(histogram['p99'])}"


def main():
    arguments = sys.argv[1:]
    out_dir = pathlib.Path(arguments.pop(0) if arguments and ":" not in arguments[0] else "/tmp/spindle-figures")
    runs = arguments or DEFAULT_RUNS
    out_dir.mkdir(parents=True, exist_ok=True)
    print("| accel | smp | apic | timer mode | boot_ms | smp_bringup_ms | timer lateness p50 / p99 "
          "| IPI round trip p50 / p99 | TSC read p50 / p99 | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        accel, smp = run.split(":")
        document_path = out_dir / f"{accel}-{smp}.json"
        command = ["cargo", "spindle", "run", "--accel", accel, "--smp", smp, "--quiet",
                   "--timeout", "600", "--json", str(document_path)]
        result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if result.returncode != 0:
            print(f"| {accel} | {smp} | run failed with exit code {result.returncode}: "
                  f"{result.stderr.strip().splitlines()[-1:]} |")
            continue
        document = json.loads(document_path.read_text())
        histograms = {histogram["name"]: histogram for histogram in document["histograms"]}
        print(f"| {accel} | {smp} | {document['apic_mode']} | {document['timer_mode']} | {document['boot_ms']} "
              f"| {document['smp_bringup_ms']} | {percentiles(histograms, 'apic.timer_lateness')} "
              f"| {percentiles(histograms, 'ipi.round_trip')} | {percentiles(histograms, 'tsc.read_cost')} "
              f"| {document['exit']['wall_ms'] / 1000:.1f} |", flush=True)


if __name__ == "__main__":
    main()
