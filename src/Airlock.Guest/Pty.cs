using System.Runtime.InteropServices;
using Airlock.Envd.Connect;
using Microsoft.Win32.SafeHandles;

namespace Airlock.Guest;

/// <summary>
/// A pseudo-terminal for one command (https://man7.org/linux/man-pages/man7/pty.7.html). The agent keeps the master
/// end: output is read from it, input and resizes go to it. The command opens the slave by path before it starts a
/// session, so the terminal becomes its controlling terminal (see <see cref="ProcessTable"/>).
/// </summary>
/// <remarks>
/// The agent holds its own slave descriptor until the command exits: without it a read on the master fails with EIO
/// before the command has opened the slave. Once the agent lets go and the last slave is closed, the master reads
/// what is left and then EIO: the end of the output.
/// </remarks>
internal sealed class Pty : IDisposable
{
    private const int ReadWrite = 0x2;
    private const int NoCtty = 0x100;
    private const int NonBlock = 0x800;
    private const int CloseOnExec = 0x80000;
    private const nuint TiocSwinsz = 0x5414;
    private const nuint TiocGptn = 0x80045430;
    private const nuint TiocSptlck = 0x40045431;
    private const short PollIn = 0x1;

    private readonly SafeFileHandle _master;
    private SafeFileHandle? _slave;
    private volatile bool _stopReading;

    private Pty(SafeFileHandle master, SafeFileHandle slave, string slavePath)
    {
        _master = master;
        _slave = slave;
        SlavePath = slavePath;
    }

    /// <summary>The slave's path (<c>/dev/pts/N</c>), which the command opens as its stdin, stdout and stderr.</summary>
    public string SlavePath { get; }

    /// <summary>Opens a terminal of the given size, its slave owned by <paramref name="owner"/> when the agent is root.</summary>
    public static unsafe Pty Open(uint cols, uint rows, UserAccount? owner)
    {
        // Close-on-exec on both ends: the agent starts other commands concurrently, and a stray copy of a slave in one
        // of them would keep this terminal open after its command exits.
        var master = NativeMethods.open("/dev/ptmx", ReadWrite | NoCtty | NonBlock | CloseOnExec);
        if (master.IsInvalid)
        {
            throw Failed("open /dev/ptmx");
        }

        try
        {
            var unlock = 0;
            uint number;
            if (NativeMethods.ioctl(master, TiocSptlck, &unlock) != 0 || NativeMethods.ioctl(master, TiocGptn, &number) != 0)
            {
                throw Failed("unlock the pseudo-terminal");
            }

            var path = string.Create(System.Globalization.CultureInfo.InvariantCulture, $"/dev/pts/{number}");
            var slave = NativeMethods.open(path, ReadWrite | NoCtty | CloseOnExec);
            if (slave.IsInvalid)
            {
                throw Failed($"open {path}");
            }

            // A user's terminal is the user's, as login(1) leaves it: tools such as mesg, write and ssh check.
            if (owner is not null && NativeMethods.fchown(slave, owner.Uid, owner.Gid) != 0)
            {
                slave.Dispose();
                throw Failed($"chown {path}");
            }

            var pty = new Pty(master, slave, path);
            try
            {
                pty.Resize(cols, rows);
            }
            catch
            {
                pty.Dispose();
                throw;
            }

            return pty;
        }
        catch
        {
            master.Dispose(); // idempotent when the terminal was already disposed whole
            throw;
        }
    }

    /// <summary>Sets the window size; the kernel sends SIGWINCH to the terminal's foreground process group.</summary>
    public unsafe void Resize(uint cols, uint rows)
    {
        if (cols is 0 or > ushort.MaxValue || rows is 0 or > ushort.MaxValue)
        {
            throw new ConnectException(ConnectCodes.InvalidArgument, $"pty size {cols}x{rows} is out of range (1..65535 columns and rows)");
        }

        var size = new NativeMethods.WinSize { Cols = (ushort)cols, Rows = (ushort)rows };
        try
        {
            if (NativeMethods.ioctl(_master, TiocSwinsz, &size) != 0)
            {
                throw Failed("resize the pseudo-terminal");
            }
        }
        catch (ObjectDisposedException)
        {
            throw Closed();
        }
    }

    /// <summary>Writes input as if typed; waits (without blocking a thread) while the terminal's input queue is full.</summary>
    public async Task WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        while (!data.IsEmpty)
        {
            var written = TryWrite(data.Span);
            if (written > 0)
            {
                data = data[(int)written..];
                continue;
            }

            // The command is not reading: its input queue (4 KiB) is full. Wait for room, giving up with the request.
            await Task.Delay(TimeSpan.FromMilliseconds(10), cancellationToken);
        }
    }

    /// <summary>
    /// Copies output to <paramref name="publish"/> on a thread of its own until the terminal is closed on the slave side
    /// (EIO) or <see cref="StopReading"/> is called. The callback may block: the command then waits for its reader.
    /// </summary>
    public Task ReadAsync(Action<ReadOnlyMemory<byte>> publish) =>
        Task.Factory.StartNew(() => ReadLoop(publish), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    /// <summary>Lets go of the agent's slave descriptor (the command has exited).</summary>
    public void CloseSlave() => Interlocked.Exchange(ref _slave, null)?.Dispose();

    /// <summary>Ends the read loop even when a background process still holds the terminal open.</summary>
    public void StopReading() => _stopReading = true;

    public void Dispose()
    {
        StopReading();
        CloseSlave();
        _master.Dispose();
    }

    private unsafe nint TryWrite(ReadOnlySpan<byte> data)
    {
        fixed (byte* pointer = data)
        {
            nint written;
            try
            {
                written = NativeMethods.write(_master, pointer, (nuint)data.Length);
            }
            catch (ObjectDisposedException)
            {
                throw Closed();
            }

            if (written >= 0)
            {
                return written;
            }

            var errno = Marshal.GetLastPInvokeError();
            return errno is Errno.EAGAIN or Errno.EINTR
                ? 0
                : throw new ConnectException(ConnectCodes.FailedPrecondition, $"the terminal is closed: {Marshal.GetPInvokeErrorMessage(errno)}");
        }
    }

    private unsafe void ReadLoop(Action<ReadOnlyMemory<byte>> publish)
    {
        var buffer = new byte[32 * 1024];
        var added = false;
        _master.DangerousAddRef(ref added);
        try
        {
            var poll = new NativeMethods.PollFd { Fd = (int)_master.DangerousGetHandle(), Events = PollIn };
            while (true)
            {
                // A short timeout, so StopReading takes effect while a background process keeps the terminal open.
                var ready = NativeMethods.poll(&poll, 1, 200);
                if (ready == 0 || (ready < 0 && Marshal.GetLastPInvokeError() == Errno.EINTR))
                {
                    if (_stopReading)
                    {
                        return;
                    }

                    continue;
                }

                nint read;
                fixed (byte* pointer = buffer)
                {
                    read = NativeMethods.read(_master, pointer, (nuint)buffer.Length);
                }

                if (read > 0)
                {
                    publish(buffer.AsMemory(0, (int)read).ToArray());
                    continue;
                }

                if (read < 0 && Marshal.GetLastPInvokeError() is Errno.EAGAIN or Errno.EINTR)
                {
                    continue;
                }

                return; // EIO: every slave is closed and the output is drained
            }
        }
        finally
        {
            if (added)
            {
                _master.DangerousRelease();
            }
        }
    }

    private static ConnectException Closed() => new(ConnectCodes.FailedPrecondition, "the terminal is closed: its process has exited");

    private static ConnectException Failed(string what) =>
        new(ConnectCodes.Internal, $"cannot {what}: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
}
