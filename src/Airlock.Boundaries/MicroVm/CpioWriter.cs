using System.Globalization;
using System.Text;

namespace Airlock.Boundaries.MicroVm;

/// <summary>
/// Writes a cpio archive in the "newc" format the kernel unpacks as an initramfs.
/// </summary>
/// <remarks>
/// Written here because no maintained .NET library writes newc, and owning it keeps the archive byte-for-byte
/// reproducible (fixed mtimes, uids and inode numbers), so its hash is a stable cache key.
/// </remarks>
internal sealed class CpioWriter(Stream output) : IDisposable
{
    private const int Directory = 0x4000;
    private const int Regular = 0x8000;
    private const int Symlink = 0xA000;
    private int _inode = 1;

    public void AddDirectory(string path, int mode = 0x1ED) => WriteEntry(path, Directory | mode, []);

    public void AddFile(string path, ReadOnlySpan<byte> content, int mode = 0x1A4) => WriteEntry(path, Regular | mode, content);

    public void AddSymlink(string path, string target) => WriteEntry(path, Symlink | 0x1FF, Encoding.UTF8.GetBytes(target));

    public void Dispose()
    {
        WriteEntry("TRAILER!!!", 0, []);
        output.Flush();
    }

    private void WriteEntry(string path, int mode, ReadOnlySpan<byte> content)
    {
        var name = Encoding.UTF8.GetBytes(path + "\0");
        var inode = mode == 0 ? 0 : _inode++;
        var header = new StringBuilder("070701", 110);
        foreach (var field in new[] { inode, mode, 0, 0, (mode & Directory) != 0 ? 2 : 1, 0, content.Length, 0, 0, 0, 0, name.Length, 0 })
        {
            header.Append(field.ToString("x8", CultureInfo.InvariantCulture));
        }

        output.Write(Encoding.ASCII.GetBytes(header.ToString()));
        output.Write(name);
        Pad(110 + name.Length);
        output.Write(content);
        Pad(content.Length);
    }

    private void Pad(int length)
    {
        Span<byte> zeros = stackalloc byte[4];
        zeros.Clear();
        output.Write(zeros[..((4 - (length % 4)) % 4)]);
    }
}
