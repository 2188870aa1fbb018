"""Copy one file with rsync over OpenSSH, into a temp name, reporting progress.

rsync runs with ``--inplace`` onto the caller's private temp name (``.<name>.partial``), not
with plain ``--partial``: ``--partial`` keeps an interrupted file only when rsync gets to clean
up, and a SIGKILLed or power-cut receiver never does, leaving an orphaned ``.name.XXXXXX``
that the next run ignores. With ``--inplace`` every byte written stays written, and on the next
run rsync's delta algorithm matches the blocks already there and sends only the rest. The usual
objection to ``--inplace`` (readers see a half-written file) does not apply, because nobody
reads the temp name: the caller verifies it and renames it into place. ``--times`` lets a rerun
after a crash between "copied" and "renamed" skip the copy altogether (size and mtime match).

rsync must not outlive us: an orphaned rsync would keep writing the temp file under the next
attempt. ``PR_SET_PDEATHSIG`` alone does not do it, because it reaches only the process it is set
on, and rsync forks (its receiver) and starts ssh, neither of which inherits it; a SIGKILLed
worker was seen to leave both writing for seconds. So rsync runs under a tiny ``sh`` that leads
its own process group and gets SIGTERM when we die, and kills the whole group when it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import math
import os
import re
import shlex
import shutil
import signal

from stageflow.errors import DiskFullError, TransferError
from stageflow.transfer._ssh_remote import host_key_error, key_refused_error, openssh_command
from stageflow.transfer._ssh_target import Progress, SshOptions, SshUrl

__all__ = ["rsync_copy"]

# "      1,234,567  45%   10.00MB/s    0:00:01 (xfr#0, to-chk=1/1)"; the thousands separator
# follows the locale, so every non-digit in the number is dropped.
_PROGRESS = re.compile(rb"^\s*([\d][\d,.' ]*?)\s+\d+%")
_STDERR_TAIL = 4000
# Runs "$@" (rsync) in the background and waits; on SIGTERM/SIGHUP (our death, or _stop) it
# SIGKILLs its whole process group: rsync, rsync's forked receiver, ssh, and itself.
_SUPERVISOR = 'trap "trap - TERM HUP; kill -KILL 0" TERM HUP\n"$@" &\nwait $!\n'
_PR_SET_PDEATHSIG = 1
_STOP_GRACE_S = 5.0
_EXIT_MEANING = {
    5: "could not start the remote rsync",
    10: "socket I/O error",
    11: "file I/O error",
    12: "the connection broke mid-stream",
    20: "killed by a signal",
    23: "partial transfer",
    30: "timed out waiting for data",
    255: "ssh failed",
}


async def rsync_copy(
    source: str,
    dest: str,
    *,
    url: SshUrl,
    opts: SshOptions,
    total: int,
    progress: Progress | None,
    extra: tuple[str, ...] = (),
) -> None:
    """Run ``rsync source dest`` (one side is ``user@host:path``); raise a ``TransferError``.

    ``extra`` adds options (a directory passes ``--files-from``). rsync and its helpers die
    with this process and are stopped if the caller is cancelled.
    """
    argv = [
        shutil.which("rsync") or "rsync",
        "--inplace",
        "--times",
        "--protect-args",
        "--info=progress2",
        f"--timeout={max(1, math.ceil(opts.io_timeout))}",
        "-e",
        shlex.join(openssh_command(url, opts)),
    ]
    if opts.bandwidth_limit is not None:
        argv.append(f"--bwlimit={max(1, round(opts.bandwidth_limit / 1024))}")
    argv += [*extra, "--", source, dest]
    proc = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        _SUPERVISOR,
        "sh",
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # the group the supervisor kills
        preexec_fn=_term_with_parent,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr_tail = asyncio.create_task(_tail(proc.stderr))
    try:
        await _report(proc.stdout, total, progress)
        stderr = await stderr_tail
        code = await proc.wait()
    except BaseException:
        stderr_tail.cancel()
        await _stop(proc)
        raise
    if code != 0:
        raise _error(code, stderr, url, opts)


def _term_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """``preexec_fn``: SIGTERM the supervisor when its parent dies (it then kills the group)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


async def _report(stream: asyncio.StreamReader, total: int, progress: Progress | None) -> None:
    """Parse ``--info=progress2`` lines (separated by CR) and forward them to ``progress``."""
    pending = b""
    last = -1
    while chunk := await stream.read(65536):
        pending += chunk
        *lines, pending = re.split(rb"[\r\n]", pending)
        for line in lines:
            match = _PROGRESS.match(line)
            if match is None or progress is None:
                continue
            done = min(int(re.sub(rb"\D", b"", match.group(1))), total)
            if done != last:
                last = done
                progress(done, total)


async def _tail(stream: asyncio.StreamReader) -> str:
    data = b""
    while chunk := await stream.read(65536):
        data = (data + chunk)[-_STDERR_TAIL:]
    return data.decode(errors="replace").strip()


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the group (the supervisor then SIGKILLs it all), SIGKILL what lingers."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), _STOP_GRACE_S)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


def _error(code: int, stderr: str, url: SshUrl, opts: SshOptions) -> TransferError:
    if "Permission denied (publickey" in stderr or "Too many authentication failures" in stderr:
        return key_refused_error(url, opts, "rsync's ssh: " + stderr.splitlines()[-1])
    if "Host key verification failed" in stderr or "IDENTIFICATION HAS CHANGED" in stderr:
        return host_key_error(url, opts, "rsync's ssh: " + stderr.splitlines()[-1])
    if "No space left on device" in stderr:
        return DiskFullError(f"no space left while transferring {url}: {stderr}")
    meaning = _EXIT_MEANING.get(code, "failed")
    return TransferError(f"rsync for {url} exited {code} ({meaning}): {stderr or 'no message'}")
