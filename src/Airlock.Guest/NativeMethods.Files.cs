using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Airlock.Guest;

/// <summary>The libc calls of the file API's special-file checks (<see cref="FileStatus"/>, <see cref="RegularFile"/>).</summary>
internal static partial class NativeMethods
{
    /// <summary><c>open(2)</c> flags of <see cref="RegularFile.Open"/> (x86_64 and arm64 share these values).</summary>
    internal const int ORdOnly = 0, OWrOnly = 1, ONoctty = 0x100, ONonblock = 0x800, OCloexec = 0x80000;

    /// <summary>https://man7.org/linux/man-pages/man2/stat.2.html — follows symlinks; fills a <c>struct stat</c>.</summary>
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static unsafe partial int stat(string path, byte* buffer);

    /// <summary>https://man7.org/linux/man-pages/man2/fstat.2.html — what an open descriptor really is.</summary>
    [LibraryImport("libc", SetLastError = true)]
    internal static unsafe partial int fstat(SafeFileHandle fd, byte* buffer);

    /// <summary>https://man7.org/linux/man-pages/man2/fstatfs.2.html — <c>f_type</c>, the file system's magic, comes first.</summary>
    [LibraryImport("libc", SetLastError = true)]
    internal static unsafe partial int fstatfs(SafeFileHandle fd, byte* buffer);

    /// <summary>https://man7.org/linux/man-pages/man2/fchmod.2.html</summary>
    [LibraryImport("libc", SetLastError = true)]
    internal static partial int fchmod(SafeFileHandle fd, uint mode);
}
