using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Airlock.Envd.Connect;
using Airlock.Envd.Protocol.Filesystem;
using Google.Protobuf.WellKnownTypes;

namespace Airlock.Guest;

/// <summary>Describes files as envd's <c>EntryInfo</c>, from <c>lstat</c> (owner and mode are not in .NET's API).</summary>
internal sealed class Entries(Users users)
{
    private const uint TypeMask = 0xF000;
    private const uint Directory = 0x4000;
    private const uint Symlink = 0xA000;
    private const uint Regular = 0x8000;

    /// <summary>The entry at <paramref name="path"/>, not following a final symlink.</summary>
    public EntryInfo Describe(string path)
    {
        var stat = Lstat(path) ?? throw new ConnectException(ConnectCodes.NotFound, $"'{path}' does not exist");
        var entry = new EntryInfo
        {
            Name = Path.GetFileName(path.TrimEnd('/')) is { Length: > 0 } name ? name : "/",
            Path = path,
            Size = stat.Size,
            Mode = stat.Mode & 0xFFF,
            Permissions = Permissions(stat.Mode),
            Owner = users.UserName(stat.Uid),
            Group = users.GroupName(stat.Gid),
            ModifiedTime = Timestamp.FromDateTimeOffset(DateTimeOffset.FromUnixTimeSeconds(stat.MtimeSeconds).AddTicks(stat.MtimeNanoseconds / 100)),
        };
        switch (stat.Mode & TypeMask)
        {
            case Directory:
                entry.Type = FileType.Directory;
                break;
            case Symlink:
                entry.Type = FileType.Symlink;
                try
                {
                    entry.SymlinkTarget = new FileInfo(path).LinkTarget ?? string.Empty;
                }
                catch (IOException)
                {
                    entry.SymlinkTarget = string.Empty;
                }

                break;
            default:
                entry.Type = FileType.File;
                break;
        }

        return entry;
    }

    public bool Exists(string path) => Lstat(path) is not null;

    public bool IsDirectory(string path) => Lstat(path) is { } s && (s.Mode & TypeMask) == Directory;

    private static string Permissions(uint mode)
    {
        Span<char> text = stackalloc char[10];
        text[0] = (mode & TypeMask) switch { Directory => 'd', Symlink => 'l', Regular => '-', _ => '?' };
        const string rwx = "rwxrwxrwx";
        for (var i = 0; i < 9; i++)
        {
            text[i + 1] = (mode & (1u << (8 - i))) != 0 ? rwx[i] : '-';
        }

        return new string(text);
    }

    private readonly record struct Stat(uint Mode, uint Uid, uint Gid, long Size, long MtimeSeconds, long MtimeNanoseconds);

    private static unsafe Stat? Lstat(string path)
    {
        // struct stat is 144 bytes on x86_64 and 128 on arm64; size and mtime sit at the same offsets on both.
        var buffer = stackalloc byte[256];
        if (NativeMethods.lstat(path, buffer) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            return errno switch
            {
                2 or 20 => null, // ENOENT, ENOTDIR
                13 => throw new ConnectException(ConnectCodes.PermissionDenied, $"permission denied: '{path}'"),
                36 => throw new ConnectException(ConnectCodes.InvalidArgument, $"path too long: '{path}'"),
                _ => throw new ConnectException(ConnectCodes.Internal, $"lstat '{path}' failed with errno {errno}"),
            };
        }

        var span = new ReadOnlySpan<byte>(buffer, 256);
        var arm = RuntimeInformation.ProcessArchitecture == Architecture.Arm64;
        var mode = BinaryPrimitives.ReadUInt32LittleEndian(span[(arm ? 16 : 24)..]);
        var uid = BinaryPrimitives.ReadUInt32LittleEndian(span[(arm ? 24 : 28)..]);
        var gid = BinaryPrimitives.ReadUInt32LittleEndian(span[(arm ? 28 : 32)..]);
        var size = BinaryPrimitives.ReadInt64LittleEndian(span[48..]);
        var seconds = BinaryPrimitives.ReadInt64LittleEndian(span[88..]);
        var nanos = BinaryPrimitives.ReadInt64LittleEndian(span[96..]);
        return new Stat(mode, uid, gid, size, seconds, nanos);
    }
}
