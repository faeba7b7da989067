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


def cmd_runner_join(settings: Settings, args: argparse.Namespace) -> int:
    from cluster.runner import join
    from cluster.runtime import ray_executable

    token = args.token or os.environ.get("CLASSIFLY_TOKEN", "")
    ray_token = args.ray_token or os.environ.get("RAY_AUTH_TOKEN", "")
    owner, cpus = join(
        args.address, token, args.api or settings.api_url, cpus=args.cpus, ray_token=ray_token, ray_exe=ray_executable()
    )
    _print(f"This machine is now {owner.username}'s runner with {cpus:g} CPUs: only their training runs here.")
    _print("Leave with 'classifly runner leave'.")
    return 0


def cmd_runner_leave(settings: Settings, args: argparse.Namespace) -> int:
    from cluster.runner import leave
    from cluster.runtime import ray_executable

    leave(ray_exe=ray_executable())
    _print("This machine has left the cluster.")
    return 0


def cmd_doctor(settings: Settings, args: argparse.Namespace) -> int:
    from cluster.ops import doctor

    report = doctor(
        settings, repair=args.repair, grace_s=args.grace, deep=args.deep, stale_s=args.stale_after, out=_print
    )
    return 0 if report.clean else 1


def cmd_backup(settings: Settings, args: argparse.Namespace) -> int:
    from cluster.ops import backup

    backup(settings, args.path, out=_print)
    return 0


def cmd_restore(settings: Settings, args: argparse.Namespace) -> int:
    from cluster.ops import restore, verify_backup

    if args.verify_only:
        manifest = verify_backup(args.path)
        _print(f"The backup is complete: {len(manifest['files'])} files, taken {manifest['created_at']}.")
        return 0
    restore(settings, args.path, replace=args.replace, out=_print)
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
    doctor = commands.add_parser("doctor", help="check the catalog against the blob store (platform up or down)")
    doctor.add_argument("--repair", action="store_true", help="delete orphans, mark interrupted and lost things")
    doctor.add_argument(
        "--grace",
        type=float,
        default=3600,
        metavar="SECONDS",
        help="unreferenced files younger than this are left alone (work in progress); default 3600",
    )
    doctor.add_argument("--deep", action="store_true", help="also read every picture and check its sha256")
    doctor.add_argument(
        "--stale-after",
        type=float,
        default=120,
        metavar="SECONDS",
        help="platform up: a job or run nothing works on, unchanged this long, counts as interrupted; default 120",
    )
    doctor.set_defaults(handler=cmd_doctor)
    back_up = commands.add_parser("backup", help="copy the catalog and the blob store into a new folder")
    back_up.add_argument("path", help="a new or empty folder")
    back_up.set_defaults(handler=cmd_backup)
    restore = commands.add_parser("restore", help="restore a backup (the platform must be stopped)")
    restore.add_argument("path", help="a folder written by 'classifly backup'")
    restore.add_argument("--replace", action="store_true", help="move the existing data aside and restore")
    restore.add_argument("--verify-only", action="store_true", help="only check the backup's files and sha256s")
    restore.set_defaults(handler=cmd_restore)
    runner = commands.add_parser("runner", help="lend this machine to your own training (see docs/CLUSTER.md)")
    runner_commands = runner.add_subparsers(dest="runner_command", required=True)
    join = runner_commands.add_parser("join", help="join the cluster as a runner that only runs your training")
    join.add_argument("--address", required=True, help="the Ray cluster's head, HOST:6379")
    join.add_argument("--token", default="", help="your Classifly API token (or CLASSIFLY_TOKEN)")
    join.add_argument("--api", default="", help="the Classifly API's URL (default CLASSIFLY_PUBLIC_API_URL)")
    join.add_argument("--ray-token", default="", help="the cluster's Ray token from its operator (or RAY_AUTH_TOKEN)")
    join.add_argument("--cpus", type=float, default=None, help="CPUs to lend (default: all of them)")
    join.set_defaults(handler=cmd_runner_join)
    leave = runner_commands.add_parser("leave", help="stop the Ray node 'runner join' started on this machine")
    leave.set_defaults(handler=cmd_runner_leave)
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
