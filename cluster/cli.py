"""The `classifly` command: up, status, down, and admin tasks."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence

from cluster.config import Settings, get_settings
from pipelines.errors import ClassiflyError


def _print(*parts: object) -> None:
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from cluster.runtime import up

    if args.address:
        settings = settings.model_copy(update={"ray_address": args.address})
    urls = up(settings, with_ui=not args.no_ui, out=_print)
    _print("")
    _print("Classifly is running.")
    _print(f"  API            {urls.api}   (interactive docs: {urls.docs})")
    if not args.no_ui:
        _print(f"  Web UI         {urls.ui}")
    _print(f"  Ray dashboard  {urls.dashboard}")
    _print(f"  Data           {settings.data_dir}")
    _print("Create an admin with 'classifly admin create-user NAME --admin'; stop with 'classifly down'.")
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from cluster.runtime import status

    report = status(settings)
    for name, value in report.items():
        _print(f"{name:<10} {value}")
    return 0 if report["api"].startswith("healthy") else 1


def cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    from cluster.runtime import down

    down(settings, out=_print)
    _print("Classifly is stopped.")
    return 0


def catalog_for_cli(settings: Settings):
    """The running platform's catalog actor when it is up; otherwise the catalog file opened here."""
    from cluster.runtime import _ray_alive, read_state

    address = settings.ray_address or read_state(settings).get("ray_address")
    if address and _ray_alive(address):
        import ray

        from cluster.catalog.actor import RayCatalog, start_catalog_actor

        ray.init(address=address, namespace=settings.ray_namespace, logging_level="ERROR", log_to_driver=False)
        return RayCatalog(start_catalog_actor(settings.catalog_file, settings.ray_namespace))
    from cluster.catalog.client import LocalCatalog

    return LocalCatalog(settings.catalog_file)


def cmd_create_user(settings: Settings, args: argparse.Namespace) -> int:
    from cluster.catalog import users as catalog_users
    from cluster.security import check_password_rules, hash_password

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"Password for {args.username}: ")
        if password != getpass.getpass("Repeat it: "):
            _print("The two passwords differ; nothing was created.")
            return 2
    check_password_rules(password)
    catalog = catalog_for_cli(settings)
    user = catalog.call_sync(catalog_users.create_user, args.username, hash_password(password), is_admin=args.admin)
    _print(f"Created {'administrator' if user.is_admin else 'user'} '{user.username}' ({user.id}).")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="classifly", description="Image classifiers for everyone, on Ray.")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the platform (Ray, catalog, API, UI) and print its URLs")
    up.add_argument("--address", help="join this Ray cluster ('auto' for the local one) instead of starting Ray")
    up.add_argument("--no-ui", action="store_true", help="do not start the web UI")
    up.set_defaults(handler=cmd_up)
    commands.add_parser("status", help="say what is running").set_defaults(handler=cmd_status)
    commands.add_parser("down", help="stop everything 'up' started").set_defaults(handler=cmd_down)
    admin = commands.add_parser("admin", help="administration").add_subparsers(dest="admin_command", required=True)
    create = admin.add_parser("create-user", help="create an account")
    create.add_argument("username")
    create.add_argument("--admin", action="store_true", help="make it an administrator")
    create.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    create.set_defaults(handler=cmd_create_user)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Ray 2.60 turns token auth on for a new head but may not detect it when a later process connects;
    # saying so explicitly keeps the cluster protected and every process able to join it.
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    args = build_parser().parse_args(argv)
    try:
        code = args.handler(get_settings(), args)
    except ClassiflyError as error:
        _print(f"Error: {error.detail}")
        code = 1
    except RuntimeError as error:
        _print(f"Error: {error}")
        code = 1
    sys.stderr.flush()
    # DuckDB's bindings print spurious "leaked instance" noise at interpreter exit; skip that teardown.
    os._exit(code)


if __name__ == "__main__":
    main()
