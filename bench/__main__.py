"""`python -m bench`: measure the sidecar against the references a user would pick
instead, in one run, and print one table (also written as JSON, text, Markdown and a PNG
chart to bench-results/). `python -m bench profile`: where the kv get path spends its
time. See docs/benchmarks.md."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench.env import REPO, Bench, Settings, migrate, sidecar_process, start_services
from bench.results import Table, render

SECTIONS = ("kv", "semantic", "episodic", "artifact", "footprint", "webhook")
# Blocks measured inside a configuration's sidecar, in the order they run.
BLOCK_SECTIONS = ("kv", "episodic", "semantic", "artifact")


def _check_imports() -> None:
    missing = []
    for module in ("redis", "matplotlib"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise SystemExit(
            f"python -m bench needs {', '.join(missing)}: "
            f"{sys.executable} -m pip install -e '.[bench]' (make bench does)"
        )


def _sizes(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part.replace("_", "").replace("k", "000")) for part in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: give sizes like 10k,100k") from exc
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: sizes must be positive")
    return values


def _sections(text: str) -> tuple[str, ...]:
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown section(s) {', '.join(unknown) or '(none)'}; "
            f"choose from {', '.join(SECTIONS)}"
        )
    return chosen


async def _run(bench: Bench, sections: Sequence[str]) -> None:
    from bench import artifact, episodic, footprint, kv, semantic, webhook
    from bench.configs import Configuration, configurations, left_out_notes
    from memsidecar.client import AsyncMemSidecar, RetryPolicy

    modules = {"kv": kv, "episodic": episodic, "semantic": semantic, "artifact": artifact}
    bench.table.notes.extend(left_out_notes())

    async def attempt(what: str, step: Callable[[], Awaitable[None]]) -> None:
        """Run one part; a failure (e.g. a server restarted under the run) is reported
        and the run goes on, so one broken part does not lose the rest of the table."""
        try:
            await step()
        except Exception as exc:
            message = f"{what} failed: {type(exc).__name__}: {str(exc)[:500]}"
            bench.failures.append(message)
            bench.log(message)
            bench.log(traceback.format_exc())

    async def configuration(config: Configuration, wanted: list[str]) -> None:
        if config.uses_database:
            bench.log(f"memsidecar migrate: {migrate(config.overrides, bench.services.s3_env)}")
        async with sidecar_process(config.overrides, env=bench.services.s3_env) as proc:
            client = AsyncMemSidecar(socket=proc.socket, retry=RetryPolicy(max_retries=0))
            try:
                await client.wait_ready()
                for block in wanted:
                    driver = config.drivers[block]
                    bench.log(f"{block} [{driver}]")
                    await attempt(
                        f"{block} [{driver}]",
                        functools.partial(modules[block].run, bench, driver, proc, client),
                    )
            finally:
                await client.close()

    try:
        for config in configurations(bench):
            wanted = [b for b in BLOCK_SECTIONS if b in sections and b in config.drivers]
            if wanted:
                bench.log(f"configuration {config.name}: {config.drivers}")
                await attempt(
                    f"configuration {config.name}", functools.partial(configuration, config, wanted)
                )
        if "footprint" in sections:
            bench.log("footprint")
            await attempt("footprint", functools.partial(footprint.run, bench))
        if "webhook" in sections:
            bench.log("webhook")
            await attempt("webhook", functools.partial(webhook.run, bench))
    finally:
        for cleanup in reversed(bench.cleanups):
            try:
                await cleanup()
            except Exception as exc:
                bench.log(f"cleanup failed (left behind, harmless): {type(exc).__name__}: {exc}")


def run(args: argparse.Namespace) -> int:
    _check_imports()
    from bench.results import write_all

    settings = Settings.quick_mode() if args.quick else Settings()
    changes: dict[str, object] = {}
    if args.semantic_sizes:
        changes["semantic_sizes"] = args.semantic_sizes
    if args.seconds is not None:
        changes["seconds"] = args.seconds
    if changes:
        settings = dataclasses.replace(settings, **changes)  # type: ignore[arg-type]
    sections = args.sections or SECTIONS
    start = time.monotonic()

    def log(message: str) -> None:
        if not args.quiet:
            print(
                f"[bench {time.monotonic() - start:6.1f}s] {message}", file=sys.stderr, flush=True
            )

    services = start_services(log, start=not args.no_services)
    table = Table(settings={**settings.as_json(), "sections": list(sections)})
    bench = Bench(settings, services, table, verbose=not args.quiet)
    asyncio.run(_run(bench, sections))
    order = {name: i for i, name in enumerate(SECTIONS)}
    table.rows.sort(key=lambda row: order.get(row.section, len(order)))
    elapsed = time.monotonic() - start
    table.notes.append(f"run took {elapsed:.0f} s")
    table.notes.extend(f"FAILED: {failure}" for failure in bench.failures)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    paths = write_all(table, args.out, stamp)
    print(render(table))
    print()
    for note in table.notes:
        print(f"note: {note}")
    print(f"written: {', '.join(str(p) for p in paths.values())} (and latest.*)")
    for failure in bench.failures:
        print(f"FAILED: {failure}")
    return 1 if bench.failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results", help="where results go")
    parser.add_argument(
        "--sections", type=_sections, help=f"comma list of {', '.join(SECTIONS)} (default: all)"
    )
    parser.add_argument(
        "--semantic-sizes",
        type=_sizes,
        help="semantic data set sizes, e.g. 10k,100k (default 10k: 100k loads for minutes)",
    )
    parser.add_argument("--seconds", type=float, help="seconds per throughput point (default 2)")
    parser.add_argument(
        "--no-services",
        action="store_true",
        help="do not run scripts/*.sh up (the servers are already running)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    prof = sub.add_parser("profile", help="profile the kv get path (py-spy and pyinstrument)")
    prof.add_argument("--seconds", type=float, default=15.0, help="seconds of load to sample")
    prof.add_argument("--clients", type=int, default=16, help="concurrent callers")
    prof.add_argument("--top", type=int, default=25, help="functions to list")
    prof.add_argument(
        "--native", action="store_true", help="also sample C/Cython frames (py-spy --native)"
    )
    prof.add_argument("--out", type=Path, default=REPO / "bench-results", help="where output goes")
    args = parser.parse_args(argv)
    if args.command == "profile":
        from bench.profile import profile

        return profile(args)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
