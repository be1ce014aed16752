"""A click group that imports each subcommand's module only when that command runs, and turns
m3search's own errors into one clear line instead of a traceback."""
from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from m3search.errors import M3SearchError


class LazyGroup(click.Group):
    """commands: name -> 'module:attr'. A module that is not installed (yet) is simply not listed."""

    def __init__(self, *args, lazy_commands: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = {
            name: target for name, target in (lazy_commands or {}).items() if _module_exists(target.partition(":")[0])
        }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy_commands:
            return _load(name, self.lazy_commands[name])
        return super().get_command(ctx, name)

    def main(self, *args, **kwargs):
        """As click's, except that a usage error is one line ('Error: ... (see 'm3search query --help')')
        and Ctrl-C exits with 130 (128 + SIGINT), as shells expect, instead of 1."""
        if kwargs.get("standalone_mode", True) is False:
            return super().main(*args, **kwargs)
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx is not None else "m3search"
            click.echo(f"Error: {e.format_message()} (see '{where} --help')", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except (KeyboardInterrupt, click.Abort):
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except M3SearchError as e:
            raise click.ClickException(str(e)) from None


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def _load(name: str, target: str) -> click.Command:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise click.ClickException(f"the {name!r} command can't be loaded: {e}") from None
    command = getattr(module, attr, None)
    if not isinstance(command, click.Command):
        # the module's author may have named its command differently: take the one command it defines
        found = [v for v in vars(module).values() if isinstance(v, click.Command) and v.name == name]
        found = found or [v for v in vars(module).values() if isinstance(v, click.Command)]
        if len(found) != 1:
            raise click.ClickException(f"{module_name} defines no click command {attr!r} for {name!r}")
        command = found[0]
    return command
