using System.Security.Cryptography;

namespace Airlock.Testing.Fuzz;

/// <summary>
/// The state of some host paths (type, size, mode, content hash; directories recursively, not following symlinks), to
/// prove a run touched none of them. A path that does not exist is recorded as missing, so creating it is a change too.
/// </summary>
public sealed class TreeSnapshot
{
    private const long MaxHashedBytes = 8 << 20;
    private readonly SortedDictionary<string, string> _entries = new(StringComparer.Ordinal);

    private TreeSnapshot()
    {
    }

    public int Count => _entries.Count;

    /// <param name="roots">Files or directories.</param>
    /// <param name="skip">Full paths left out with everything under them (a database that changes by design).</param>
    public static TreeSnapshot Take(IEnumerable<string> roots, Func<string, bool>? skip = null)
    {
        var snapshot = new TreeSnapshot();
        foreach (var root in roots)
        {
            snapshot.Add(root, skip ?? (_ => false));
        }

        return snapshot;
    }

    private void Add(string path, Func<string, bool> skip)
    {
        if (skip(path))
        {
            return;
        }

        var info = new FileInfo(path);
        if (!info.Exists && !Directory.Exists(path))
        {
            _entries[path] = info.LinkTarget is { } dangling ? "symlink -> " + dangling : "missing";
            return;
        }

        if (info.LinkTarget is { } target)
        {
            _entries[path] = "symlink -> " + target;
            return;
        }

        var mode = OperatingSystem.IsLinux() ? File.GetUnixFileMode(path) : default;
        if (Directory.Exists(path))
        {
            _entries[path] = $"dir {mode}";
            foreach (var child in Directory.EnumerateFileSystemEntries(path).Order(StringComparer.Ordinal))
            {
                Add(child, skip);
            }

            return;
        }

        _entries[path] = info.Attributes.HasFlag(FileAttributes.Device) || info.Length > MaxHashedBytes
            ? $"file {mode} {info.Length}"
            : $"file {mode} {info.Length} {Hash(path)}";
    }

    private static string Hash(string path)
    {
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            return Convert.ToHexStringLower(SHA256.HashData(stream))[..16];
        }
        catch (IOException ex)
        {
            return "unreadable " + ex.GetType().Name;
        }
        catch (UnauthorizedAccessException)
        {
            return "unreadable";
        }
    }

    /// <summary>Every path whose record differs between the two, with both records.</summary>
    public IReadOnlyList<string> Diff(TreeSnapshot after)
    {
        ArgumentNullException.ThrowIfNull(after);
        var changes = new List<string>();
        foreach (var path in _entries.Keys.Union(after._entries.Keys).Order(StringComparer.Ordinal))
        {
            var before = _entries.GetValueOrDefault(path, "absent");
            var now = after._entries.GetValueOrDefault(path, "absent");
            if (before != now)
            {
                changes.Add($"{path}: {before} => {now}");
            }
        }

        return changes;
    }
}
