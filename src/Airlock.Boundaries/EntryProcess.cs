using Airlock.Boundaries.Cgroups;

namespace Airlock.Boundaries;

/// <summary>What the drivers share about a sandbox's entry process (bwrap, runc, qemu): waiting for it, and saying why it ended.</summary>
internal static class EntryProcess
{
    /// <summary>
    /// Waits until the entry process ends: our own child by its exit, an adopted one (not our child after an airlockd
    /// restart, or a detached runtime) by polling that its pid still lives in the sandbox's cgroup. Returns the exit
    /// code, or null when it was not our child.
    /// </summary>
    public static async Task<int?> WaitAsync(System.Diagnostics.Process? child, int? pid, string sandboxId, TimeSpan poll, CancellationToken cancellationToken)
    {
        if (child is not null)
        {
            await child.WaitForExitAsync(cancellationToken);
            return child.ExitCode;
        }

        using var timer = new PeriodicTimer(poll);
        while (await timer.WaitForNextTickAsync(cancellationToken))
        {
            if (pid is not { } alive || !NativeMethods.IsAlive(alive) || !CgroupManager.Contains(alive, sandboxId))
            {
                break;
            }
        }

        return null;
    }

    /// <summary>Why an entry process ended: its exit code or signal, out-of-memory kills in its cgroup, the end of its log.</summary>
    public static string Describe(string who, int? exitCode, CgroupManager cgroups, string sandboxId, string logPath, IReadOnlyDictionary<int, string>? knownCodes = null)
    {
        var reason = exitCode switch
        {
            null => $"{who} is gone",
            { } code when knownCodes?.TryGetValue(code, out var known) == true => known,
            > 128 => $"{who} was killed by signal {exitCode - 128}",
            _ => $"{who} exited with code {exitCode}",
        };
        var ooms = cgroups.OomKills(sandboxId);
        if (ooms > 0)
        {
            reason += $" ({ooms} out-of-memory kill(s) in the sandbox)";
        }

        if (File.Exists(logPath))
        {
            var tail = File.ReadLines(logPath).TakeLast(5).ToArray();
            if (tail.Length > 0)
            {
                reason += ": " + string.Join(" | ", tail);
            }
        }

        return reason;
    }
}
