"""`kimiplan emulator serve` and `kimiplan calibrate sample|fit`."""

from __future__ import annotations

import signal
import sys
import threading

from kimiplan.errors import ConfigError

from ._util import print_table


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
    serve.set_defaults(func=_serve)

    cal = sub.add_parser("calibrate", help="sample calls and fit route distributions from them")
    cal_sub = cal.add_subparsers(dest="calibrate_command", metavar="ACTION")
    cal_sub.required = True
    s = cal_sub.add_parser("sample", help="send the planned calls (resumable) and append them to a store")
    s.add_argument("config", help="YAML sampler config (run_id, routes with n, max_completion_tokens ...)")
    s.add_argument("--store", required=True, help="JSONL store; re-running resumes it")
    s.add_argument("--model", required=True, help="exact model id, e.g. kimi-k2.6 (never guessed)")
    s.add_argument(
        "--base-url",
        default="https://api.moonshot.ai/v1",
        help="https://api.moonshot.ai/v1, https://api.moonshot.cn/v1 or a local emulator URL",
    )
    s.add_argument("--tier", help="catalog tier name to stay under (e.g. Tier1)")
    s.add_argument("--region", default=None, help="catalog region for prices and tiers (intl or cn)")
    s.add_argument("--time-scale", type=float, default=1.0, help="wait multiplier (match the emulator's)")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=_sample)
    f = cal_sub.add_parser("fit", help="fit a calibration file from stores and usage logs")
    f.add_argument("inputs", nargs="+", help="sampler stores (JSONL), usage logs (JSONL responses or CSV)")
    f.add_argument("-o", "--output", required=True, help="calibration JSON to write, e.g. data/calibrations/X.json")
    f.add_argument("--model", help="model id when the inputs mix several")
    f.set_defaults(func=_fit)


def _serve(args) -> int:
    from kimiplan.emulator import EmulatorConfig, load_emulator_config, serve_forever

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be 0-65535 (0 picks a free port), got {args.port}")
    cfg = load_emulator_config(args.config) if args.config else EmulatorConfig()
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
    # Only the URL goes to stdout, flushed at once: a script (or test) started with --port 0 reads the port from it.
    print(base_url, flush=True)
    print(f"kimiplan emulator (not the real service) on {base_url} — Ctrl-C to stop", file=sys.stderr, flush=True)


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


def _sample(args) -> int:
    from kimiplan.calibration.sampler import load_sampler_config, run_sampler
    from kimiplan.catalog.cards import load_catalog
    from kimiplan.client import KimiClient, KimiConfig, RetryPolicy

    config = load_sampler_config(args.config)
    catalog = load_catalog()
    card = catalog.price(args.model, region=args.region)
    if args.tier:
        config = config.with_tier(catalog.tier(args.tier, region=args.region))
    kc = KimiConfig.from_env(args.model, base_url=args.base_url, retry=RetryPolicy(time_scale=args.time_scale))
    with KimiClient(kc) as client:
        summary = run_sampler(client, config, args.store, card=card, progress=not args.no_progress)
    print(summary)
    return 2 if summary.stopped_reason else 0


def _fit(args) -> int:
    from kimiplan.calibration.fitters import fit_calibration, samples_frame

    df = samples_frame(*args.inputs)
    cal = fit_calibration(df, model=args.model)
    path = cal.save(args.output)
    print_table(cal.summary().reset_index() if cal.summary().index.name else cal.summary())
    print(f"wrote {path} ({cal.n_samples} samples, provenance {cal.provenance})")
    return 0
