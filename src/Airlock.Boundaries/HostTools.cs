using CliWrap;
using CliWrap.Buffered;

namespace Airlock.Boundaries;

/// <summary>Small host facts and tool calls every driver needs.</summary>
internal static class HostTools
{
    /// <summary>Runs a tool to completion; null when it is not installed.</summary>
    public static async Task<BufferedCommandResult?> TryRunAsync(string tool, string[] args, CancellationToken cancellationToken)
    {
        try
        {
            return await Cli.Wrap(tool).WithArguments(args).WithValidation(CommandResultValidation.None).ExecuteBufferedAsync(cancellationToken);
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return null;
        }
    }

    /// <summary>The host kernel's release: what a process or container sandbox runs on.</summary>
    public static string HostKernel() => File.ReadAllText("/proc/sys/kernel/osrelease").Trim();

    /// <summary>Paths that go into mount options and runtime arguments must be absolute and free of their separators.</summary>
    public static void ValidatePath(string path, string what)
    {
        if (string.IsNullOrEmpty(path) || !Path.IsPathFullyQualified(path) || path.IndexOfAny([',', ':', '\n', '\\']) >= 0)
        {
            throw new InvalidOperationException($"the {what} path '{path}' must be absolute and free of ',', ':' and '\\'");
        }
    }

    /// <summary>Mount points of this mount namespace, from /proc/self/mountinfo (octal escapes for spaces undone).</summary>
    public static IEnumerable<string> MountPoints()
    {
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            var fields = line.Split(' ');
            if (fields.Length > 4)
            {
                yield return fields[4].Replace("\\040", " ", StringComparison.Ordinal);
            }
        }
    }
}
