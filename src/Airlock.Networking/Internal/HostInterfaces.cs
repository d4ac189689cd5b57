using System.Globalization;

namespace Airlock.Networking.Internal;

/// <summary>Reads our host-side interfaces from sysfs; the alias records <c>airlock:&lt;sandboxId&gt;:&lt;index&gt;</c>.</summary>
internal static class HostInterfaces
{
    private const string SysClassNet = "/sys/class/net";

    public static string Alias(string sandboxId, int index) =>
        string.Create(CultureInfo.InvariantCulture, $"airlock:{sandboxId}:{index}");

    public static (string SandboxId, int Index)? ParseAlias(string? alias)
    {
        var parts = alias?.Trim().Split(':');
        if (parts is not ["airlock", var id, var idx] || !NetworkNames.IsValidSandboxId(id)
            || !int.TryParse(idx, NumberStyles.None, CultureInfo.InvariantCulture, out var index))
        {
            return null;
        }

        return (id, index);
    }

    /// <summary>Host interfaces whose name starts with the prefix, with their alias (null when unset).</summary>
    public static IReadOnlyList<(string Name, string? Alias)> List(NetworkOptions options)
    {
        var result = new List<(string, string?)>();
        if (!Directory.Exists(SysClassNet))
        {
            return result;
        }

        foreach (var dir in Directory.EnumerateFileSystemEntries(SysClassNet))
        {
            var name = Path.GetFileName(dir);
            if (!name.StartsWith(options.InterfacePrefix, StringComparison.Ordinal))
            {
                continue;
            }

            string? alias = null;
            try
            {
                alias = File.ReadAllText(Path.Combine(dir, "ifalias")).Trim();
            }
            catch (IOException)
            {
            }

            result.Add((name, string.IsNullOrEmpty(alias) ? null : alias));
        }

        return result;
    }

    public static bool Exists(string name) => Directory.Exists(Path.Combine(SysClassNet, name));

    public static bool NamespaceExists(string name) => File.Exists(Path.Combine("/run/netns", name));

    public static IEnumerable<string> Namespaces(string prefix) =>
        Directory.Exists("/run/netns")
            ? Directory.EnumerateFiles("/run/netns").Select(Path.GetFileName).OfType<string>()
                .Where(n => n.StartsWith(prefix, StringComparison.Ordinal))
            : [];
}
