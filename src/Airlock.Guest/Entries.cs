using Airlock.Envd.Connect;
using Airlock.Envd.Protocol.Filesystem;
using Google.Protobuf.WellKnownTypes;

namespace Airlock.Guest;

/// <summary>
/// Describes files as envd's <c>EntryInfo</c>, from <c>lstat</c>: nothing here opens a file, so a FIFO, socket or
/// device is described like any other entry (as a <c>file</c>, envd's type for everything but directories and symlinks).
/// </summary>
internal sealed class Entries(Users users)
{
    /// <summary>The entry at <paramref name="path"/>, not following a final symlink.</summary>
    public EntryInfo Describe(string path)
    {
        var stat = FileStatus.Lstat(path) ?? throw new ConnectException(ConnectCodes.NotFound, $"'{path}' does not exist");
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
        switch (stat.Type)
        {
            case FileStatus.Directory:
                entry.Type = FileType.Directory;
                break;
            case FileStatus.Symlink:
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

    public bool Exists(string path) => FileStatus.Lstat(path) is not null;

    public bool IsDirectory(string path) => FileStatus.Lstat(path) is { Type: FileStatus.Directory };

    private static string Permissions(uint mode)
    {
        Span<char> text = stackalloc char[10];
        text[0] = (mode & FileStatus.TypeMask) switch { FileStatus.Directory => 'd', FileStatus.Symlink => 'l', FileStatus.Regular => '-', _ => '?' };
        const string rwx = "rwxrwxrwx";
        for (var i = 0; i < 9; i++)
        {
            text[i + 1] = (mode & (1u << (8 - i))) != 0 ? rwx[i] : '-';
        }

        return new string(text);
    }
}
