using System.Runtime.InteropServices;

namespace Airlock.Guest;

/// <summary>The few libc calls .NET does not expose.</summary>
internal static partial class NativeMethods
{
    /// <summary>https://man7.org/linux/man-pages/man2/geteuid.2.html</summary>
    [LibraryImport("libc", SetLastError = true)]
    internal static partial uint geteuid();

    /// <summary>https://man7.org/linux/man-pages/man2/kill.2.html — a negative pid signals the process group.</summary>
    [LibraryImport("libc", SetLastError = true)]
    internal static partial int kill(int pid, int signal);

    /// <summary>https://man7.org/linux/man-pages/man2/lchown.2.html</summary>
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int lchown(string path, uint owner, uint group);

    /// <summary>https://man7.org/linux/man-pages/man2/lstat.2.html — fills a <c>struct stat</c> (see <see cref="Entries"/>).</summary>
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static unsafe partial int lstat(string path, byte* buffer);

    /// <summary>https://man7.org/linux/man-pages/man2/prctl.2.html</summary>
    [LibraryImport("libc", SetLastError = true)]
    internal static partial int prctl(int option, nuint arg2, nuint arg3, nuint arg4, nuint arg5);

    /// <summary>https://man7.org/linux/man-pages/man2/clock_settime.2.html</summary>
    [LibraryImport("libc", SetLastError = true)]
    internal static partial int clock_settime(int clock, ref Timespec time);

    /// <summary>https://man7.org/linux/man-pages/man2/sethostname.2.html</summary>
    [LibraryImport("libc", SetLastError = true)]
    internal static partial int sethostname(byte[] name, nuint length);

    /// <summary>https://man7.org/linux/man-pages/man2/ioctl.2.html</summary>
    [LibraryImport("libc", SetLastError = true)]
    internal static unsafe partial int ioctl(int fd, nuint request, byte* argument);

    [StructLayout(LayoutKind.Sequential)]
    internal struct Timespec
    {
        public long Seconds;
        public long Nanoseconds;
    }
}
