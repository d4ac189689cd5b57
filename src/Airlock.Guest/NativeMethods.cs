using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

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

    /// <summary>
    /// https://man7.org/linux/man-pages/man2/setfsuid.2.html — changes only the calling thread's file-system uid and
    /// answers the previous one.
    /// </summary>
    [LibraryImport("libc")]
    internal static partial int setfsuid(uint fsuid);

    /// <summary>https://man7.org/linux/man-pages/man2/setfsgid.2.html — per thread, like <see cref="setfsuid"/>.</summary>
    [LibraryImport("libc")]
    internal static partial int setfsgid(uint fsgid);

    /// <summary>
    /// https://man7.org/linux/man-pages/man2/syscall.2.html — for the raw per-thread <c>setgroups</c>; glibc's wrapper
    /// (https://man7.org/linux/man-pages/man2/setgroups.2.html) applies it to every thread of the process.
    /// </summary>
    [LibraryImport("libc", SetLastError = true)]
    internal static unsafe partial nint syscall(nint number, nint arg1, uint* arg2);

    /// <summary>https://man7.org/linux/man-pages/man2/rename.2.html</summary>
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int rename(string oldPath, string newPath);

    /// <summary>https://man7.org/linux/man-pages/man2/renameat2.2.html (glibc 2.28+)</summary>
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int renameat2(int oldDirectory, string oldPath, int newDirectory, string newPath, uint flags);

    /// <summary>https://man7.org/linux/man-pages/man2/rmdir.2.html</summary>
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int rmdir(string path);

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

    /// <summary>https://man7.org/linux/man-pages/man2/open.2.html</summary>
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial SafeFileHandle open(string path, int flags);

    /// <summary>https://man7.org/linux/man-pages/man2/read.2.html</summary>
    [LibraryImport("libc", SetLastError = true)]
    internal static unsafe partial nint read(SafeFileHandle fd, byte* buffer, nuint count);

    /// <summary>https://man7.org/linux/man-pages/man2/write.2.html</summary>
    [LibraryImport("libc", SetLastError = true)]
    internal static unsafe partial nint write(SafeFileHandle fd, byte* buffer, nuint count);

    /// <summary>https://man7.org/linux/man-pages/man2/poll.2.html</summary>
    [LibraryImport("libc", SetLastError = true)]
    internal static unsafe partial int poll(PollFd* fds, nuint count, int timeoutMilliseconds);

    /// <summary>https://man7.org/linux/man-pages/man2/ioctl.2.html, on a handle the agent owns.</summary>
    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    internal static unsafe partial int ioctl(SafeFileHandle fd, nuint request, void* argument);

    /// <summary>https://man7.org/linux/man-pages/man2/fchown.2.html</summary>
    [LibraryImport("libc", SetLastError = true)]
    internal static partial int fchown(SafeFileHandle fd, uint owner, uint group);

    /// <summary>https://man7.org/linux/man-pages/man2/inotify_init1.2.html</summary>
    [LibraryImport("libc", SetLastError = true)]
    internal static partial SafeFileHandle inotify_init1(int flags);

    /// <summary>https://man7.org/linux/man-pages/man2/inotify_add_watch.2.html — answers the watch descriptor.</summary>
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int inotify_add_watch(SafeFileHandle fd, string path, uint mask);

    /// <summary>https://man7.org/linux/man-pages/man2/inotify_rm_watch.2.html</summary>
    [LibraryImport("libc", SetLastError = true)]
    internal static partial int inotify_rm_watch(SafeFileHandle fd, int watch);

    /// <summary>The <c>struct pollfd</c> of poll(2).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    /// <summary>The <c>struct winsize</c> of TIOCGWINSZ/TIOCSWINSZ (https://man7.org/linux/man-pages/man2/TIOCSWINSZ.2const.html).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct WinSize
    {
        public ushort Rows;
        public ushort Cols;
        public ushort XPixels;
        public ushort YPixels;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct Timespec
    {
        public long Seconds;
        public long Nanoseconds;
    }
}

/// <summary>The errno values the agent tells apart (https://man7.org/linux/man-pages/man3/errno.3.html).</summary>
internal static class Errno
{
    public const int EPERM = 1;
    public const int ENOENT = 2;
    public const int EACCES = 13;
    public const int EEXIST = 17;
    public const int EXDEV = 18;
    public const int EINVAL = 22;
    public const int EINTR = 4;
    public const int EIO = 5;
    public const int EAGAIN = 11;
    public const int ENOSPC = 28;
    public const int ENOTDIR = 20;
}
