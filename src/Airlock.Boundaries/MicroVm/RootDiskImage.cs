using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using CliWrap;
using CliWrap.Buffered;

namespace Airlock.Boundaries.MicroVm;

/// <summary>
/// A template's root filesystem as a read-only ext4 image (<c>mkfs.ext4 -d</c>), built once per template version.
/// Sandboxes never write it: each gets a qcow2 overlay whose backing file it is.
/// </summary>
public static class RootDiskImage
{
    private const string Version = "airlock-rootdisk-1";

    /// <summary>Builds (or finds) the image for a template root; returns its path and the hash naming it.</summary>
    public static async Task<(string Path, string Hash)> EnsureAsync(string cacheDir, string templateId, string rootFs, int sizeMiB, CancellationToken cancellationToken)
    {
        // The template builder's marker names the template's inputs; without one, the directory's mtime stands in.
        var marker = Path.Combine(Path.GetDirectoryName(rootFs) ?? rootFs, ".complete");
        var version = File.Exists(marker)
            ? (await File.ReadAllTextAsync(marker, cancellationToken)).Trim()
            : Directory.GetLastWriteTimeUtc(rootFs).Ticks.ToString(CultureInfo.InvariantCulture);
        var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(string.Join('\n', Version, templateId, rootFs, version, sizeMiB))))[..16];
        var image = Path.Combine(cacheDir, $"{templateId}-{hash}.ext4");
        if (File.Exists(image))
        {
            return (image, hash);
        }

        await using var held = await FileLock.AcquireAsync(image + ".lock", cancellationToken);
        if (File.Exists(image))
        {
            return (image, hash);
        }

        var temp = image + ".tmp";
        File.Delete(temp);
        // Inode tables and the journal are written now, so no guest spends its first minutes (and its overlay) on it.
        var result = await Cli.Wrap("mkfs.ext4")
            .WithArguments(["-q", "-F", "-L", "airlock-root", "-d", rootFs, "-E", "lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0", "-m", "0", temp, $"{sizeMiB}M"])
            .WithValidation(CommandResultValidation.None)
            .ExecuteBufferedAsync(cancellationToken);
        if (result.ExitCode != 0)
        {
            File.Delete(temp);
            throw new InvalidOperationException($"mkfs.ext4 -d {rootFs} failed: {result.StandardError.Trim()}");
        }

        UnixFiles.SetMode(temp, UnixFileMode.UserRead | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        File.Move(temp, image, overwrite: true);
        return (image, hash);
    }
}
