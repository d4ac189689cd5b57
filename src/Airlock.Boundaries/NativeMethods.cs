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

    /// <summary>https://man7.org/linux/man-pages/man2/open_tree.2.html (glibc 2.36+)</summary>
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int open_tree(int dirfd, string path, uint flags);

    /// <summary>https://man7.org/linux/man-pages/man2/mount_setattr.2.html (glibc 2.36+)</summary>
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int mount_setattr(int dirfd, string path, uint flags, ref MountAttr attr, nuint size);

    /// <summary>https://man7.org/linux/man-pages/man2/move_mount.2.html (glibc 2.36+)</summary>
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int move_mount(int fromDirfd, string fromPath, int toDirfd, string toPath, uint flags);

    /// <summary>https://man7.org/linux/man-pages/man2/close.2.html</summary>
    [LibraryImport("libc", SetLastError = true)]
    internal static partial int close(int fd);

    /// <summary>https://man7.org/linux/man-pages/man2/stat.2.html (glibc 2.33+ exports stat)</summary>
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int stat(string path, [Out] byte[] buffer);

    /// <summary>https://man7.org/linux/man-pages/man2/lstat.2.html</summary>
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int lstat(string path, [Out] byte[] buffer);

    /// <summary>Owner of a path itself (a symlink is not followed), or null.</summary>
    public static (uint Uid, uint Gid)? Owner(string path)
    {
        // st_uid and st_gid sit at offsets 28 and 32 of x86_64's struct stat.
        var buffer = new byte[144];
        return RuntimeInformation.ProcessArchitecture == Architecture.X64 && lstat(path, buffer) == 0
            ? (BitConverter.ToUInt32(buffer, 28), BitConverter.ToUInt32(buffer, 32))
            : null;
    }

    /// <summary>Bytes a file occupies on disk (st_blocks × 512), which for a sparse image is far less than its size.</summary>
    public static long? AllocatedBytes(string path)
    {
        // struct stat on x86_64 is 144 bytes with st_blocks (512-byte units) at offset 64.
        var buffer = new byte[144];
        return RuntimeInformation.ProcessArchitecture == Architecture.X64 && stat(path, buffer) == 0
            ? BitConverter.ToInt64(buffer, 64) * 512
            : null;
    }

    /// <summary>struct mount_attr of mount_setattr(2).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct MountAttr
    {
        public ulong AttrSet;
        public ulong AttrClr;
        public ulong Propagation;
        public ulong UsernsFd;
    }

    public static bool IsAlive(int pid) => kill(pid, 0) == 0 || Marshal.GetLastPInvokeError() == 1; // EPERM: alive, not ours
}
