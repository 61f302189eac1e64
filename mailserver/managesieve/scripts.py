"""The script commands of ManageSieve carried out on the store; shared by the webmail's filter pages.

:func:`execute` runs one typed command of :mod:`mailserver.managesieve.wire` for an account and returns what
:meth:`ManageSieveSession.op_done` takes, or raises :class:`~mailserver.managesieve.wire.No` with the RFC 5804
response code; the mapping from store errors to codes is here and only here.  A script is compiled (with the
account's and its domain's scripts for ``include``) in the ``cpu`` pool before it is stored, so PUTSCRIPT refuses
what delivery could not run, with the parse error's line and column.  After a change that alters what delivery
runs (PUTSCRIPT of the active script, SETACTIVE, RENAMESCRIPT), the pipeline filter's cache of the account is
dropped so the next message sees it at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailserver.delivery.sieve_stage import compile_error_text, compile_for_account
from mailserver.managesieve import wire
from mailserver.managesieve.session import ScriptEntry
from mailserver.managesieve.wire import No
from mailserver.sieve import SieveCompileError
from mailserver.threads import run_in
from storage.errors import AlreadyExists, Invalid, NotFound
from storage.sieve import ActiveScript, SieveQuota, check_script_name

if TYPE_CHECKING:
    from mailserver.services import Services


def _name(name: str) -> str:
    try:
        return check_script_name(name)
    except Invalid as e:
        raise No(str(e)) from None


def _quota(e: SieveQuota) -> No:
    return No(str(e), wire.QUOTA_MAXSCRIPTS if e.kind == "maxscripts" else wire.QUOTA_MAXSIZE)


async def check(services: Services, account_id: int, name: str, text: str) -> None:
    """Compile in the cpu pool; No with the error's line and column."""
    try:
        await run_in(services.reactor, services.pools.cpu, compile_for_account, services.store, services.config.sieve,
                     account_id, name, text)
    except SieveCompileError as e:
        raise No(compile_error_text(e)) from None


async def execute(services: Services, account_id: int, cmd: wire.Command):
    astore = services.astore
    cfg = services.config.sieve
    quota = {"max_scripts": cfg.max_scripts, "max_storage": cfg.max_storage}
    try:
        if isinstance(cmd, wire.ListScripts):
            return [ScriptEntry(s.name, s.active) for s in await astore.list_sieve_scripts(account_id)]
        if isinstance(cmd, wire.GetScript):
            s = await astore.get_sieve_script(account_id, cmd.name)
            if s is None:
                raise No("there is no such script", wire.NONEXISTENT)
            return s.content
        if isinstance(cmd, wire.HaveSpace):
            await astore.sieve_have_space(account_id, _name(cmd.name), cmd.size, **quota)
            return None
        if isinstance(cmd, wire.CheckScript):
            await check(services, account_id, "script", cmd.script)
            return ""
        if isinstance(cmd, wire.PutScript):
            name = _name(cmd.name)
            await check(services, account_id, name, cmd.script)
            info = await astore.put_sieve_script(account_id, name, cmd.script, **quota)
            if info.active:
                _invalidate(services, account_id)
            return ""
        if isinstance(cmd, wire.SetActive):
            # RFC 5804 2.8: the empty name makes no script active.
            if cmd.name:
                s = await astore.get_sieve_script(account_id, cmd.name)
                if s is not None:
                    # A script that no longer compiles (an included one changed) is not made active.
                    await check(services, account_id, s.name, s.content)
            await astore.activate_sieve_script(account_id, cmd.name or None)
            _invalidate(services, account_id)
            return None
        if isinstance(cmd, wire.DeleteScript):
            await astore.delete_sieve_script(account_id, cmd.name)
            _invalidate(services, account_id)
            return None
        if isinstance(cmd, wire.RenameScript):
            await astore.rename_sieve_script(account_id, cmd.old, _name(cmd.new))
            _invalidate(services, account_id)
            return None
    except NotFound:
        raise No("there is no such script", wire.NONEXISTENT) from None
    except AlreadyExists:
        raise No("a script of that name exists", wire.ALREADYEXISTS) from None
    except ActiveScript:
        raise No("the active script cannot be deleted", wire.ACTIVE) from None
    except SieveQuota as e:
        raise _quota(e) from None
    except Invalid as e:
        raise No(str(e)) from None
    raise TypeError(f"not a script command: {cmd!r}")


def _invalidate(services: Services, account_id: int) -> None:
    flt = services.pipeline.filter
    if flt is not None and hasattr(flt, "invalidate"):
        flt.invalidate(account_id)
