using System.Runtime.InteropServices;
using Airlock.Envd.Connect;
using Microsoft.Win32.SafeHandles;

namespace Airlock.Guest;

/// <summary>
/// A regular file the file API opened for reading. Sandbox code controls every path the API is given, so it may plant
/// a FIFO (a reader waits for a writer forever), a socket, a device (<c>/dev/zero</c> never ends) or a symlink to any
/// of them; nothing here ever blocks on one.
/// </summary>
/// <remarks>
/// <code>
/// stat(path)                       a FIFO, socket or device is refused before it is opened (opening a device can act)
/// open(O_RDONLY|O_NONBLOCK|O_NOCTTY)  one swapped in meanwhile opens at once (a FIFO does not wait for a writer,
///    │                                a terminal does not become the agent's), and then
/// fstat(fd)                        the type of what was opened decides: refused unless a regular file
/// fstatfs(fd)                      on a kernel pseudo file system st_size is not the length (0 in /proc, 4096 in /sys):
///    │                             the length is unknown and reads stop at EOF or <see cref="PseudoFileLimit"/>
/// readlink(/proc/self/fd/N)        an entry of the agent's own /proc/&lt;pid&gt; is refused: its environ holds the token
/// </code>
/// The descriptor keeps O_NONBLOCK: a pseudo-file that would block a reader (<c>/proc/kmsg</c>, tracefs'
/// <c>trace_pipe</c>) answers EAGAIN, read as its end.
/// </remarks>
internal sealed class RegularFile : IDisposable
{
    /// <summary>At most this many bytes are read from a file whose length the kernel does not tell.</summary>
    public const int PseudoFileLimit = 8 << 20;

    private RegularFile(SafeFileHandle handle, string path, long? length, uint permissions)
    {
        Handle = handle;
        Path = path;
        Length = length;
        Permissions = permissions;
    }

    public SafeFileHandle Handle { get; }

    public string Path { get; }

    /// <summary>The file's length when it was opened; null for a pseudo-file (and an empty file, whose length costs one read).</summary>
    public long? Length { get; }

    /// <summary>The permission bits (<c>st_mode &amp; 07777</c>).</summary>
    public uint Permissions { get; }

    /// <summary>
    /// Opens <paramref name="path"/> (symlinks followed) if it is a regular file, else throws a
    /// <see cref="ConnectException"/>: <c>failed_precondition</c> for a FIFO, socket or device, <c>invalid_argument</c>
    /// for a directory, <c>permission_denied</c> for the agent's own <c>/proc</c> entries. Call it as the requesting
    /// user (<see cref="Users.As{T}"/>): the kernel checks the open with that user's credentials.
    /// </summary>
    public static RegularFile Open(string path)
    {
        var before = FileStatus.Stat(path) ?? throw new ConnectException(ConnectCodes.NotFound, $"'{path}' does not exist");
        Refuse(before, path);
        var handle = NativeMethods.open(path, NativeMethods.ORdOnly | NativeMethods.ONonblock | NativeMethods.ONoctty | NativeMethods.OCloexec);
        if (handle.IsInvalid)
        {
            var errno = Marshal.GetLastPInvokeError();
            handle.Dispose();
            throw errno switch
            {
                Errno.ENOENT or Errno.ENOTDIR => new ConnectException(ConnectCodes.NotFound, $"'{path}' does not exist"),
                Errno.EACCES or Errno.EPERM => new UnauthorizedAccessException($"Access to the path '{path}' is denied."),
                NoDevice => new ConnectException(ConnectCodes.FailedPrecondition, Special(path, "a socket or device")),
                _ => new IOException($"cannot open '{path}': {Marshal.GetPInvokeErrorMessage(errno)}", errno),
            };
        }

        try
        {
            var status = FileStatus.Fstat(handle, path);
            Refuse(status, path);
            var pseudo = PseudoFileSystem(handle, path);
            if (pseudo == ProcMagic && OwnProcEntry(handle))
            {
                throw new ConnectException(ConnectCodes.PermissionDenied, $"'{path}' is an entry of the agent's own process in /proc; the agent does not serve it");
            }

            return new RegularFile(handle, path, pseudo is null && status.Size > 0 ? status.Size : null, status.Mode & 0xFFF);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Reads what fits in <paramref name="buffer"/> (one read(2), retried on EINTR). 0 at the end, and when a
    /// pseudo-file has nothing now (EAGAIN): the agent never waits for one.
    /// </summary>
    public unsafe int Read(Span<byte> buffer)
    {
        fixed (byte* pointer = buffer)
        {
            while (true)
            {
                var read = NativeMethods.read(Handle, pointer, (nuint)buffer.Length);
                if (read >= 0)
                {
                    return (int)read;
                }

                var errno = Marshal.GetLastPInvokeError();
                if (errno == Errno.EAGAIN)
                {
                    return 0;
                }

                if (errno != Errno.EINTR)
                {
                    throw new IOException($"cannot read '{Path}': {Marshal.GetPInvokeErrorMessage(errno)}", errno);
                }
            }
        }
    }

    /// <summary>Reads until <paramref name="buffer"/> is full or the file ends; answers how much was read.</summary>
    public int Fill(Span<byte> buffer)
    {
        var total = 0;
        int read;
        while (total < buffer.Length && (read = Read(buffer[total..])) > 0)
        {
            total += read;
        }

        return total;
    }

    public void Dispose() => Handle.Dispose();

    private const int NoDevice = 6; // ENXIO: a socket, or a device without its driver

    /// <summary>PROC_SUPER_MAGIC.</summary>
    private const long ProcMagic = 0x9fa0;

    /// <summary>
    /// Kernel file systems whose files are generated on read, with an st_size that is not their length
    /// (https://man7.org/linux/man-pages/man2/statfs.2.html): proc, sysfs, cgroup v1/v2, debugfs, tracefs,
    /// securityfs, configfs, bpf, efivarfs, pstore, selinuxfs, smackfs.
    /// </summary>
    private static readonly long[] PseudoMagics =
    [
        ProcMagic, 0x62656572, 0x27e0eb, 0x63677270, 0x64626720, 0x74726163,
        0x73636673, 0x62656570, 0xcafe4a11, 0xde5e81e4, 0x6165676c, 0xf97cff8c, 0x43415d53,
    ];

    private static void Refuse(FileStatus status, string path)
    {
        if (status.SpecialKind is { } kind)
        {
            throw new ConnectException(ConnectCodes.FailedPrecondition, Special(path, kind));
        }

        if (status.Type == FileStatus.Directory)
        {
            throw new ConnectException(ConnectCodes.InvalidArgument, $"'{path}' is a directory");
        }
    }

    private static string Special(string path, string kind) =>
        $"'{path}' is {kind}; the file API reads and writes only regular files";

    /// <summary>The magic of the descriptor's file system when it is a kernel pseudo file system, else null.</summary>
    private static unsafe long? PseudoFileSystem(SafeFileHandle handle, string path)
    {
        var buffer = stackalloc byte[256];
        if (NativeMethods.fstatfs(handle, buffer) != 0)
        {
            throw new ConnectException(ConnectCodes.Internal, $"fstatfs '{path}' failed with errno {Marshal.GetLastPInvokeError()}");
        }

        // f_type is a long on x86_64 and arm64; magics are 32-bit values.
        var magic = *(long*)buffer & 0xFFFFFFFF;
        return Array.IndexOf(PseudoMagics, magic) >= 0 ? magic : null;
    }

    /// <summary>
    /// True when the open /proc file belongs to the agent itself: <c>/proc/self</c>, <c>/proc/thread-self</c>, the
    /// agent's pid or any of its thread ids, however the path reached it. The kernel names what the descriptor is
    /// (<c>/proc/self/fd/N</c> reads as <c>/proc/&lt;pid&gt;/…</c>); when it cannot, the entry is refused.
    /// </summary>
    private static bool OwnProcEntry(SafeFileHandle handle)
    {
        string? target;
        try
        {
            target = new FileInfo($"/proc/self/fd/{handle.DangerousGetHandle()}").LinkTarget;
        }
        catch (IOException)
        {
            return true;
        }

        if (target is null || !target.StartsWith("/proc/", StringComparison.Ordinal))
        {
            return true;
        }

        var rest = target.AsSpan("/proc/".Length);
        var end = rest.IndexOf('/');
        var first = end < 0 ? rest : rest[..end];
        if (!int.TryParse(first, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var id))
        {
            return false; // /proc/version, /proc/sys/…: the kernel's, not a process's
        }

        return id == Environment.ProcessId || System.IO.Directory.Exists($"/proc/self/task/{id}");
    }
}
