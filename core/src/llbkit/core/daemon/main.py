"""The ``llbkitd`` command: buildkitd's flags and config, serving the Controller over gRPC
until SIGTERM (running builds are cancelled, the store is left consistent)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from llbkit.core import __version__
from llbkit.core.errors import ConfigError, UserError

if TYPE_CHECKING:
    from llbkit.core.config import EngineConfig

__all__ = ["main"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="llbkitd")
@click.option(
    "--addr",
    "addresses",
    multiple=True,
    help=(
        "Listening address; repeatable (unix:///run/llbkit/llbkitd.sock, tcp://HOST:PORT, "
        "fd:// for the sockets systemd passes, fd://N or fd://NAME for one of them)."
    ),
)
@click.option("--root", type=click.Path(file_okay=False), help="The state root.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True),
    help="The daemon's configuration (buildkitd.toml keys).",
)
@click.option("--group", default="", help="The group that owns the unix sockets.")
@click.option("--debug", is_flag=True, help="Log every request.")
@click.option("--tlscacert", default="", help="CA that client certificates must chain to.")
@click.option("--tlscert", default="", help="The server's certificate.")
@click.option("--tlskey", default="", help="The server's key.")
@click.option(
    "--allow-insecure-entitlement",
    "entitlements",
    multiple=True,
    help="Let builds ask for network.host or security.insecure (as insecure-entitlements).",
)
@click.option(
    "--insecure-tcp",
    is_flag=True,
    help="Allow tcp:// without mutual TLS (anyone who reaches the port can build as root).",
)
@click.option(
    "--oci-worker",
    type=click.Choice(["true", "false", "auto"]),
    default=None,
    help="Enable the OCI (runc) worker (default: as [worker.oci] says, else true).",
)
@click.option(
    "--containerd-worker",
    type=click.Choice(["true", "false", "auto"]),
    default=None,
    help="Enable the containerd worker (auto: if containerd answers at its address).",
)
@click.option("--containerd-worker-addr", default="", help="containerd's socket.")
@click.option("--containerd-worker-namespace", default="", help="containerd namespace to use.")
def llbkitd(  # noqa: PLR0917 - click passes every option
    addresses: tuple[str, ...],
    root: str | None,
    config_path: str | None,
    group: str,
    debug: bool,
    tlscacert: str,
    tlscert: str,
    tlskey: str,
    entitlements: tuple[str, ...],
    insecure_tcp: bool,
    oci_worker: str | None,
    containerd_worker: str | None,
    containerd_worker_addr: str,
    containerd_worker_namespace: str,
) -> None:
    """llbkitd: BuildKit's Control API (what buildctl speaks), served by llbkit."""
    from llbkit.core.cache.root import default_root
    from llbkit.core.config import load_config
    from llbkit.core.daemon.listen import (
        TLSFiles,
        activated_sockets,
        default_address,
        parse_address,
        passed_fds,
    )
    from llbkit.core.daemon.server import Daemon

    config = load_config(Path(config_path) if config_path else None)
    for key in config.unused:
        click.echo(f"warning: {config.source}: {key} has no effect in this release", err=True)
    for line in config.warnings:
        click.echo(f"warning: {line}", err=True)
    from llbkit.core.entitlements import ENTITLEMENTS

    for entitlement in entitlements:
        if entitlement not in ENTITLEMENTS:
            raise ConfigError(
                f"--allow-insecure-entitlement {entitlement}: unknown; known: "
                f"{', '.join(ENTITLEMENTS)}"
            )
        if entitlement not in config.insecure_entitlements:
            config.insecure_entitlements.append(entitlement)
    _choose_worker(
        config, oci_worker, containerd_worker, containerd_worker_addr, containerd_worker_namespace
    )
    wanted = list(addresses) or config.grpc.address or [default_address()]
    parsed = [parse_address(a) for a in wanted]
    tls = TLSFiles(
        tlscert or config.grpc.tls_cert,
        tlskey or config.grpc.tls_key,
        tlscacert or config.grpc.tls_ca,
    )
    if any((tls.cert, tls.key, tls.ca)) and not tls.complete:
        raise ConfigError(
            "mutual TLS needs all three of --tlscert, --tlskey and --tlscacert "
            "(or [grpc.tls] cert, key and ca)"
        )
    # Socket activation: the descriptors are taken (and the variables cleared) before anything
    # else can start a process.
    activated = (
        activated_sockets(parsed, passed_fds()) if any(a.scheme == "fd" for a in parsed) else []
    )
    tcp = [a.text for a in parsed if a.scheme == "tcp"] + [s.text for s in activated if s.tcp]
    for text in tcp:
        if not tls.complete and not insecure_tcp:
            raise ConfigError(
                f"--addr {text}: TCP needs mutual TLS (--tlscert, --tlskey, --tlscacert) "
                "or, to let anyone who reaches the port build, --insecure-tcp"
            )
    daemon = Daemon(
        root=Path(root or config.root or default_root()),
        config=config,
        addresses=parsed,
        activated=activated,
        tls=tls if tls.complete else None,
        group=group,
        debug=debug or config.debug,
    )
    asyncio.run(_serve(daemon))


def _choose_worker(
    config: EngineConfig, oci: str | None, containerd: str | None, address: str, namespace: str
) -> None:
    """buildkitd's worker flags over the file: the OCI worker when enabled, else containerd
    (``auto``: when a containerd answers at its address)."""
    settings = {k: v for k, v in (("address", address), ("namespace", namespace)) if v}
    if oci is None and containerd is None and not settings:
        return  # the file's choice stands
    section = config.workers.get("containerd", {})
    if oci is None:
        oci_on = config.workers.get("oci", {}).get("enabled", True) is not False
    else:
        oci_on = oci != "false"  # auto: runc is checked when the worker starts
    if containerd is None:
        containerd_on = config.worker_name == "containerd" or section.get("enabled") is True
    elif containerd == "auto":
        where = str(settings.get("address") or section.get("address") or "")
        containerd_on = Path(
            (where or "/run/containerd/containerd.sock").removeprefix("unix://")
        ).is_socket()
    else:
        containerd_on = containerd == "true"
    # Both on: the OCI worker is the default (it runs builds); both are listed.
    config.workers["containerd"] = {**section, **settings, "enabled": containerd_on}
    config.workers["oci"] = {**config.workers.get("oci", {}), "enabled": oci_on}
    if oci_on:
        config.use_worker("oci", enabled=True)
    elif containerd_on:
        config.use_worker("containerd", enabled=True, **settings)
    else:
        config.use_worker(config.worker_name, enabled=False)


async def _serve(daemon: object) -> None:
    from llbkit.core.daemon.server import Daemon

    assert isinstance(daemon, Daemon)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    from llbkit.core.daemon.stacks import dump_stacks

    loop.add_signal_handler(signal.SIGUSR1, dump_stacks)
    async with daemon.running():
        await stop.wait()
        click.echo("llbkitd: stopping; running builds are cancelled", err=True)


def main(argv: list[str] | None = None) -> None:
    """Run llbkitd; a bad flag or config is one line and exit status 1."""
    try:
        llbkitd.main(args=argv, prog_name="llbkitd", standalone_mode=False)
    except UserError as err:
        click.echo(f"llbkitd: error: {err}", err=True)
        sys.exit(1)
    except OSError as err:  # a socket's directory it may not create, a root it may not write
        where = f" {err.filename}" if err.filename else ""
        click.echo(f"llbkitd: error:{where} {err.strerror or err}", err=True)
        sys.exit(1)
    except click.UsageError as err:
        click.echo(f"llbkitd: error: {err.format_message()} (see llbkitd --help)", err=True)
        sys.exit(err.exit_code)
    except click.ClickException as err:
        click.echo(f"llbkitd: error: {err.format_message()}", err=True)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
