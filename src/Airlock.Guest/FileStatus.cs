using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Airlock.Envd.Connect;
using Microsoft.Win32.SafeHandles;

namespace Airlock.Guest;

/// <summary>The fields of <c>struct stat</c> the agent reads (owner, mode and type are not in .NET's API).</summary>
internal readonly record struct FileStatus(uint Mode, uint Uid, uint Gid, ulong Rdev, long Size, long MtimeSeconds, long MtimeNanoseconds)
{
    public const uint TypeMask = 0xF000;
    public const uint Fifo = 0x1000;
    public const uint CharacterDevice = 0x2000;
    public const uint Directory = 0x4000;
    public const uint BlockDevice = 0x6000;
    public const uint Regular = 0x8000;
    public const uint Symlink = 0xA000;
    public const uint Socket = 0xC000;

    public uint Type => Mode & TypeMask;

    /// <summary>
    /// What a FIFO, socket or device is called in an error, or null for a regular file, directory or symlink. Opening
    /// one of these can block (a FIFO waits for a writer), never end (<c>/dev/zero</c>) or act (a device), so the file
    /// API never reads or writes them.
    /// </summary>
    public string? SpecialKind => Type switch
    {
        Fifo => "a FIFO (named pipe)",
        Socket => "a socket",
        CharacterDevice => "a character device",
        BlockDevice => "a block device",
        _ => null,
    };

    /// <summary>The entry at <paramref name="path"/> itself (a final symlink is not followed); null when there is none.</summary>
    public static unsafe FileStatus? Lstat(string path)
    {
        var buffer = stackalloc byte[256];
        return NativeMethods.lstat(path, buffer) == 0 ? Parse(buffer) : Missing(path);
    }

    /// <summary>What <paramref name="path"/> leads to, symlinks followed; null when there is nothing.</summary>
    public static unsafe FileStatus? Stat(string path)
    {
        var buffer = stackalloc byte[256];
        return NativeMethods.stat(path, buffer) == 0 ? Parse(buffer) : Missing(path);
    }

    /// <summary>What an open descriptor is: the only answer a swapped symlink cannot change.</summary>
    public static unsafe FileStatus Fstat(SafeFileHandle handle, string path)
    {
        var buffer = stackalloc byte[256];
        return NativeMethods.fstat(handle, buffer) == 0
            ? Parse(buffer)
            : throw new ConnectException(ConnectCodes.Internal, $"fstat '{path}' failed with errno {Marshal.GetLastPInvokeError()}");
    }

    private const int NameTooLong = 36; // ENAMETOOLONG
    private const int TooManyLinks = 40; // ELOOP

    private static FileStatus? Missing(string path)
    {
        var errno = Marshal.GetLastPInvokeError();
        return errno switch
        {
            Errno.ENOENT or Errno.ENOTDIR => null,
            Errno.EACCES => throw new ConnectException(ConnectCodes.PermissionDenied, $"permission denied: '{path}'"),
            NameTooLong => throw new ConnectException(ConnectCodes.InvalidArgument, $"path too long: '{path}'"),
            TooManyLinks => throw new ConnectException(ConnectCodes.InvalidArgument, $"too many levels of symbolic links: '{path}'"),
            _ => throw new ConnectException(ConnectCodes.Internal, $"stat '{path}' failed with errno {errno}"),
        };
    }

    private static unsafe FileStatus Parse(byte* buffer)
    {
        // struct stat is 144 bytes on x86_64 and 128 on arm64; size and mtime sit at the same offsets on both.
        var span = new ReadOnlySpan<byte>(buffer, 256);
        var arm = RuntimeInformation.ProcessArchitecture == Architecture.Arm64;
        var mode = BinaryPrimitives.ReadUInt32LittleEndian(span[(arm ? 16 : 24)..]);
        var uid = BinaryPrimitives.ReadUInt32LittleEndian(span[(arm ? 24 : 28)..]);
        var gid = BinaryPrimitives.ReadUInt32LittleEndian(span[(arm ? 28 : 32)..]);
        var rdev = BinaryPrimitives.ReadUInt64LittleEndian(span[(arm ? 32 : 40)..]);
        var size = BinaryPrimitives.ReadInt64LittleEndian(span[48..]);
        var seconds = BinaryPrimitives.ReadInt64LittleEndian(span[88..]);
        var nanos = BinaryPrimitives.ReadInt64LittleEndian(span[96..]);
        return new FileStatus(mode, uid, gid, rdev, size, seconds, nanos);
    }
}
