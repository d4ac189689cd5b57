using System.Runtime.InteropServices;

namespace Airlock.Boundaries;

/// <summary>The libc calls the drivers need that .NET does not expose.</summary>
internal static partial class NativeMethods
{
    public const int MntDetach = 2;

    /// <summary>https://man7.org/linux/man-pages/man2/mount.2.html</summary>
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int mount(string source, string target, string fstype, nuint flags, string? data);

    /// <summary>https://man7.org/linux/man-pages/man2/umount.2.html</summary>
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int umount2(string target, int flags);

    /// <summary>https://man7.org/linux/man-pages/man2/kill.2.html</summary>
    [LibraryImport("libc", SetLastError = true)]
    internal static partial int kill(int pid, int signal);

    /// <summary>https://man7.org/linux/man-pages/man2/lchown.2.html</summary>
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int lchown(string path, uint owner, uint group);

    /// <summary>https://man7.org/linux/man-pages/man2/geteuid.2.html</summary>
    [LibraryImport("libc")]
    internal static partial uint geteuid();

    public static bool IsAlive(int pid) => kill(pid, 0) == 0 || Marshal.GetLastPInvokeError() == 1; // EPERM: alive, not ours
}
