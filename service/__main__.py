"""Start the gateway (uvicorn) from KC_* settings.

    KC_MODEL=var/checkpoints/sft/tiny-1a2b python -m service            # embedded engine, :8000
    KC_ENGINE=vllm KC_VLLM_URLS='{"keepcurrent": "http://127.0.0.1:8001/v1"}' python -m service
    python -m service --host 0.0.0.0 --port 9000                         # flags override KC_HOST, KC_PORT

Every setting is an environment variable (or a `.env` line); `--help` lists them.
"""

from __future__ import annotations

import argparse
import logging
import sys

from core.logging import setup_logging
from service.served_models import SettingsError, resolve_models
from service.settings import ServiceSettings

log = logging.getLogger("service")


def _settings_help() -> str:
    lines = ["settings (environment variables):"]
    for name, field in ServiceSettings.model_fields.items():
        lines.append(f"  KC_{name.upper():<22} {field.description or ''}")
    return "\n".join(lines)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="The keepcurrent gateway: OpenAI-compatible chat, /ask with five strategies, metrics.",
        epilog=_settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="listen address (default: KC_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: KC_PORT, 8000)")
    parser.add_argument("--log-level", help="logging level (default: KC_LOG_LEVEL, INFO)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    overrides = {
        k: v for k, v in {"host": args.host, "port": args.port, "log_level": args.log_level}.items() if v
    }
    try:
        settings = ServiceSettings(**overrides)
        resolve_models(settings)  # fail here, with the fix in the message, not inside uvicorn's start-up
    except (SettingsError, ValueError) as e:
        print(f"python -m service: {e}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)

    import uvicorn

    from service.app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # keep core.logging's format
        timeout_graceful_shutdown=10,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
