"""``vsrkit ls``: what is registered (reads the registries; imports no torch)."""

from __future__ import annotations

from vsrkit.registry import ALL


def run_ls(args: list[str]) -> int:
    from vsrkit.plugins import setup_registries

    report = setup_registries()
    for title, registry in ALL.items():
        print(f"{title}:")
        if not len(registry):
            print("  (none)")
        for entry in registry.entries():
            facts = ", ".join(f"{k}={v}" for k, v in entry.meta.items() if k != "summary")
            summary = entry.meta.get("summary", "")
            line = f"  {entry.name:<28}"
            if facts:
                line += f" [{facts}]"
            if summary:
                line += f" {summary}"
            print(line.rstrip())
    from vsrkit.presets import preset_names

    for group in ("data", "degradation"):
        names = preset_names(group, report.config_packages)
        print(f"{group} presets (`{group}=<name>`):")
        print("  " + (", ".join(names) if names else "(none)"))
    if report.failed:
        print(f"plugins that failed to load: {', '.join(report.failed)} (see `vsrkit doctor`)")
    return 0
