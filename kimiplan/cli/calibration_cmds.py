"""`kimiplan emulator serve` and `kimiplan calibrate sample|fit`."""

from __future__ import annotations

import signal
import sys
import threading

from kimiplan.errors import ConfigError


def register(sub) -> None:
    em = sub.add_parser("emulator", help="a local Kimi-compatible emulator with known ground truth")
    em_sub = em.add_subparsers(dest="emulator_command", metavar="ACTION")
    em_sub.required = True
    serve = em_sub.add_parser(
        "serve",
        help="serve the emulator on 127.0.0.1 until interrupted",
        description="Serve the emulator on 127.0.0.1. Once it listens, the base URL (http://127.0.0.1:PORT/v1) is "
        "printed alone on stdout and flushed; notices go to stderr. SIGINT (Ctrl-C) or SIGTERM stops "
        "it cleanly with exit code 0.",
    )
    serve.add_argument(
        "--port",
        type=int,
        default=8765,
        help="port on 127.0.0.1 (default 8765); 0 picks a free port, read it from the URL on stdout",
    )
    serve.add_argument("--config", help="YAML file of EmulatorConfig (routes, overhead, limits, window, faults)")
    serve.add_argument(
        "--scenario",
        help="serve this scenario's routes (file or bundled example, e.g. support_chat): each route answers with the "
        "scenario's output sizes, and its rate tier's limits apply",
    )
    serve.add_argument(
        "--time-scale",
        type=float,
        help="real seconds per emulated second (0.01 answers 100x faster; pass the same to calibrate sample)",
    )
    serve.add_argument(
        "--api-key",
        action="append",
        metavar="KEY",
        help="accept this key (repeatable; also api_keys in --config); without any, only the public test key "
        "kimiplan-emulator-test-key is accepted, the key calibrate sample sends to a local emulator",
    )
    serve.set_defaults(func=_serve)

    cal = sub.add_parser("calibrate", help="sample calls and fit route distributions from them")
    cal_sub = cal.add_subparsers(dest="calibrate_command", metavar="ACTION")
    cal_sub.required = True
    s = cal_sub.add_parser(
        "sample",
        help="send the planned calls (resumable) and append them to a store",
        description="Send the planned calls (resumable) and append them to a store. With --until-precision, "
        "each route's n is a first batch and sampling goes on, route by route, until its mean cost per request "
        "is within the target at 95 %% (bounded by spend_cap and --max-calls). With --from-scenario and no real "
        "prompts, prompts are built to the scenario's own component sizes, and the calibration says so.",
    )
    s.add_argument(
        "config",
        nargs="?",
        help="YAML sampler config (run_id, routes with n, max_completion_tokens ...); optional with --from-scenario",
    )
    s.add_argument("--store", required=True, help="JSONL store; re-running resumes it")
    s.add_argument("--model", required=True, help="exact model id, e.g. kimi-k2.6 (never guessed)")
    s.add_argument(
        "--base-url",
        default="https://api.moonshot.ai/v1",
        help="https://api.moonshot.ai/v1, https://api.moonshot.cn/v1, a local emulator URL (http://127.0.0.1:PORT/v1, "
        "no key needed) or, with --allow-base-url, your company's gateway",
    )
    s.add_argument(
        "--allow-base-url",
        action="store_true",
        help="accept a --base-url that is neither Moonshot nor local (an OpenAI-compatible gateway in front of Kimi); "
        "the key (MOONSHOT_API_KEY) is sent there",
    )
    s.add_argument("--tier", help="catalog tier name to stay under (e.g. Tier1)")
    s.add_argument("--region", default=None, help="catalog region for prices and tiers (intl or cn)")
    s.add_argument("--time-scale", type=float, default=1.0, help="wait multiplier (match the emulator's)")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument(
        "--until-precision",
        type=float,
        metavar="REL",
        help="sample until each route's mean cost per request is within +-REL at 95%% (e.g. 0.05)",
    )
    s.add_argument(
        "--max-calls", type=int, default=5000, help="with --until-precision: calls in all at most (default 5000)"
    )
    s.add_argument(
        "--from-scenario",
        metavar="SCENARIO",
        help="build synthetic prompts to this scenario's component sizes (file or bundled example) for the routes "
        "sampled; without a config, sample every route it can (not agent or $web_search routes), 50 calls first",
    )
    s.add_argument("--prompts-per-route", type=int, default=100, help="with --from-scenario: distinct prompts")
    s.set_defaults(func=_sample)
    f = cal_sub.add_parser("fit", help="fit a calibration file from stores and usage logs")
    f.add_argument("inputs", nargs="+", help="sampler stores (JSONL), usage logs (JSONL responses or CSV)")
    f.add_argument("-o", "--output", required=True, help="calibration JSON to write, e.g. data/calibrations/X.json")
    f.add_argument("--model", help="model id when the inputs mix several")
    f.set_defaults(func=_fit)
    a = cal_sub.add_parser(
        "apply",
        help="write the scenario with a calibration's fitted laws inline (and their provenance as comments)",
        description="Apply CALIBRATION to SCENARIO and write the result as a scenario file that validates: measured "
        "input size, cache share, output/reasoning laws, server overhead and latency replace the assumptions "
        "(except what a route pins), each route says where its laws come from (calibrated:, and comments with "
        "calls, dates, model and base URL). An existing output is kept unless --force.",
    )
    a.add_argument("scenario", help="scenario file or bundled example name")
    a.add_argument("calibration", help="calibration JSON (kimiplan calibrate fit / kimiplan logs calibrate)")
    a.add_argument("-o", "--output", required=True, help="calibrated scenario YAML to write")
    a.add_argument("--force", action="store_true", help="overwrite an existing output")
    a.add_argument("--catalog", action="append", default=[], metavar="FILE")
    a.set_defaults(func=_apply)


def emulator_config_for_scenario(scenario, catalog=None):
    """An emulator that serves a scenario's routes: each route's output size is a lognormal with the scenario's
    median and 95th percentile, reasoning likewise when the route thinks, and the scenario's tier limits apply."""
    from kimiplan.catalog.resolve import rate_tier
    from kimiplan.emulator import EmulatorConfig
    from kimiplan.emulator.config import LimitsTruth, LogNormalTruth, RouteTruth

    def truth(dist):
        med, p95 = float(dist.quantile(0.5)), float(dist.quantile(0.95))
        med = max(med, 1.0)
        return LogNormalTruth(median=med, p95=max(p95, med * 1.0001))

    routes = {}
    for r in scenario.routes:
        reasoning = getattr(r, "reasoning", None)
        routes[r.name] = RouteTruth(
            output=truth(r.output), reasoning=truth(reasoning) if r.thinking and reasoning is not None else None
        )
    tier = rate_tier(scenario, catalog) if scenario.tier is not None else None
    limits = LimitsTruth(**{k: v for k, v in (tier.limits() if tier else {}).items() if k in LimitsTruth.model_fields})
    return EmulatorConfig(
        models=[scenario.model], routes=routes, default_route=scenario.routes[0].name, limits=limits, seed=scenario.seed
    )


def _serve(args) -> int:
    from kimiplan.emulator import EmulatorConfig, load_emulator_config, serve_forever

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be 0-65535 (0 picks a free port), got {args.port}")
    if args.config and args.scenario:
        raise ConfigError("--config and --scenario both describe the emulator's routes: give one")
    if args.scenario:
        from kimiplan.catalog.cards import load_catalog
        from kimiplan.catalog.resolve import load_scenario

        catalog = load_catalog()
        cfg = emulator_config_for_scenario(load_scenario(args.scenario, catalog), catalog)
        print(f"serving routes {', '.join(cfg.routes)} of {args.scenario}", file=sys.stderr, flush=True)
    else:
        cfg = load_emulator_config(args.config) if args.config else EmulatorConfig()
    if args.time_scale is not None:
        cfg = cfg.model_copy(update={"time_scale": args.time_scale})
    if args.api_key:
        if not all(k.strip() for k in args.api_key):
            raise ConfigError("--api-key must not be empty")
        cfg = cfg.model_copy(update={"api_keys": [*cfg.api_keys, *args.api_key]})
    previous = _stop_on_signals()
    try:
        serve_forever(cfg, port=args.port, on_ready=_announce)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise ConfigError(f"--port {args.port}: cannot listen ({exc.strerror})") from exc
    finally:
        _restore_signals(previous)
    return 0


def _announce(base_url: str) -> None:
    banner = f"kimiplan emulator (not the real service) on {base_url} — Ctrl-C to stop"
    if sys.stdout.isatty() and sys.stderr.isatty():
        # A person at a terminal reads one line that names the URL, not the URL twice.
        print(banner, flush=True)
        return
    # Piped: only the URL goes to stdout, flushed at once (a script started with --port 0 reads the port from it),
    # and the banner to stderr.
    print(base_url, flush=True)
    print(banner, file=sys.stderr, flush=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _stop_on_signals() -> dict:
    """Make SIGINT and SIGTERM both end serve_forever cleanly. Set explicitly: a child process that inherits an
    ignored SIGINT (background job of a non-interactive shell) would not get Python's KeyboardInterrupt handler."""
    if threading.current_thread() is not threading.main_thread():
        return {}  # signal handlers can only be set from the main thread
    return {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore_signals(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, signal.SIG_DFL if handler is None else handler)


EMULATOR_KEY_ENV = "KIMIPLAN_EMULATOR_API_KEY"  # a key given to `emulator serve --api-key`, for a local emulator


def _sample(args) -> int:
    import os
    from urllib.parse import urlparse

    from kimiplan.calibration.sampler import load_sampler_config, run_sampler
    from kimiplan.catalog.cards import load_catalog
    from kimiplan.client import ENV_KEY, KimiClient, KimiConfig, RetryPolicy

    if args.config is None and args.from_scenario is None:
        raise ConfigError("give a sampler config, or --from-scenario SCENARIO to sample its routes")
    catalog = load_catalog()
    prompts, prompt_source = None, None
    if args.from_scenario:
        config, prompts, prompt_source = _scenario_sampling(args, catalog)
    else:
        config = load_sampler_config(args.config)
    card = catalog.price(args.model, region=args.region)
    if args.tier:
        config = config.with_tier(catalog.tier(args.tier, region=args.region))
    from kimiplan.emulator.config import TEST_API_KEY

    local = (urlparse(args.base_url).hostname or "") in ("127.0.0.1", "localhost", "::1")
    # A local emulator never gets the real MOONSHOT_API_KEY: it gets KIMIPLAN_EMULATOR_API_KEY or the test key.
    key = (os.environ.get(EMULATOR_KEY_ENV) or TEST_API_KEY) if local else os.environ.get(ENV_KEY)
    if key is None:
        raise ConfigError(
            f"set {ENV_KEY} to call {args.base_url} (against a local emulator, --base-url http://127.0.0.1:PORT/v1, "
            "no key is needed)"
        )
    extra = {}
    if args.allow_base_url:
        extra["allowed_base_urls"] = (args.base_url,)
    try:
        kc = KimiConfig.from_env(
            args.model, base_url=args.base_url, api_key=key, retry=RetryPolicy(time_scale=args.time_scale), **extra
        )
    except ValueError as exc:  # pydantic's ValidationError: say which flag, not a traceback
        msg = exc.errors()[0]["msg"] if hasattr(exc, "errors") else str(exc)
        raise ConfigError(
            f"--base-url {args.base_url!r}: {msg.removeprefix('Value error, ').split('; list a gateway')[0]}; "
            "for a company gateway pass "
            "--allow-base-url"
        ) from None
    if args.until_precision is not None:
        from kimiplan.calibration.sampler import run_until_precision

        with KimiClient(kc) as client:
            run = run_until_precision(
                client,
                config,
                args.store,
                target=args.until_precision,
                max_calls=args.max_calls,
                card=card,
                prompts=prompts,
                progress=not args.no_progress,
                prompt_source=prompt_source,
            )
        print(run)
        return 0 if run.reached else 2
    with KimiClient(kc) as client:
        summary = run_sampler(
            client,
            config,
            args.store,
            card=card,
            progress=not args.no_progress,
            prompts=prompts,
            prompt_source=prompt_source,
        )
    print(summary)
    if summary.completed == 0 and summary.failed > 0:
        import json
        from pathlib import Path

        lines = Path(args.store).read_text(encoding="utf-8").splitlines() if Path(args.store).exists() else []
        records = [json.loads(x) for x in lines if x.strip().startswith("{")]
        errors = [r for r in records if r.get("status") == "error"]
        reasons: dict[str, int] = {}
        for r in errors:
            reasons[r.get("error", "unknown error")] = reasons.get(r.get("error", "unknown error"), 0) + 1
        top = sorted(reasons.items(), key=lambda kv: -kv[1])[:3]
        print(f"kimiplan: error: every call failed ({summary.failed} of {summary.planned}); reasons:", file=sys.stderr)
        for reason, n in top:
            print(f"  {n} x {reason}", file=sys.stderr)
        if any("unknown route" in r for r, _ in top):
            print(
                "  hint: the emulator does not know these routes; serve your scenario's: "
                "kimiplan emulator serve --scenario SCENARIO",
                file=sys.stderr,
            )
        return 1
    return 2 if summary.stopped_reason else 0


def _scenario_sampling(args, catalog):
    """(sampler config, prompts per route, prompt source) for --from-scenario."""
    import re

    from kimiplan.calibration.prompts import route_prompts
    from kimiplan.calibration.sampler import RouteSampling, SamplerConfig, load_sampler_config
    from kimiplan.catalog.resolve import load_scenario, max_completion

    scenario = load_scenario(args.from_scenario, catalog)
    by_name = {r.name: r for r in scenario.routes}
    if args.config:
        config = load_sampler_config(args.config)
        missing = [r.name for r in config.routes if r.name not in by_name]
        if missing:
            raise ConfigError(
                f"sampler config {args.config!r}: routes {missing} are not in scenario {args.from_scenario!r} "
                f"(has {sorted(by_name)})"
            )
    else:
        usable = [r for r in scenario.routes if r.agent is None and r.tools.web_search_calls.mean() == 0]
        if not usable:
            raise ConfigError(f"scenario {args.from_scenario!r} has no route synthetic prompts can stand in for")
        card = catalog.price(args.model, region=args.region)
        config = SamplerConfig(
            run_id=re.sub(r"[^A-Za-z0-9_.-]+", "-", scenario.name) + "-synthetic",
            routes=[
                RouteSampling(
                    name=r.name,
                    n=50,
                    max_completion_tokens=max_completion(scenario, r, card),
                    thinking=r.thinking,
                )
                for r in usable
            ],
        )
        skipped = [r.name for r in scenario.routes if r not in usable]
        if skipped:
            print(f"not sampled (agent or $web_search routes need real prompts): {', '.join(skipped)}", file=sys.stderr)
        functions = [r.name for r in usable if r.tools.function_calls.mean() > 0]
        if functions:
            # Without the application's tool definitions and results no call is a tool call: the rounds stay assumed.
            print(
                f"sampled without tools, so their function rounds stay assumed: {', '.join(functions)} (give each "
                "route's tools and tool_results in a sampler --config to measure them)",
                file=sys.stderr,
            )
    prompts = {
        r.name: route_prompts(by_name[r.name], args.prompts_per_route, seed=scenario.seed + i)
        for i, r in enumerate(config.routes)
    }
    return config, prompts, f"synthetic: built from scenario {scenario.name!r} ({args.from_scenario})"


def _fit(args) -> int:
    from kimiplan.calibration.fitters import fit_calibration, samples_frame

    df = samples_frame(*args.inputs)
    cal = fit_calibration(df, model=args.model)
    path = cal.save(args.output)
    # The summary carries each route's cost per request with its ± at 95 % and the calls still needed.
    print(cal.summary())
    print(f"\nwrote {path} ({cal.n_samples:,} samples, provenance {cal.provenance})")
    return 0


def _apply(args) -> int:
    from kimiplan.catalog.calibrated_file import write_calibrated_scenario
    from kimiplan.catalog.cards import load_catalog

    from ._util import print_calibration

    path, scenario = write_calibrated_scenario(
        args.scenario, args.calibration, args.output, force=args.force, catalog=load_catalog(args.catalog)
    )
    print_calibration(scenario)
    print(f"wrote {path} (validates; kimiplan report {path} -o report.html)")
    return 0
