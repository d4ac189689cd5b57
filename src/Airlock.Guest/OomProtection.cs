namespace Airlock.Guest;

/// <summary>Takes the agent out of the OOM killer's choice where it is allowed to (it needs CAP_SYS_RESOURCE).</summary>
internal static class OomProtection
{
    /// <summary>True once the agent's oom_score_adj is -1000 and commands must be given the default back.</summary>
    public static bool Protected { get; private set; }

    public static void TryProtect()
    {
        try
        {
            File.WriteAllText("/proc/self/oom_score_adj", "-1000");
            Protected = File.ReadAllText("/proc/self/oom_score_adj").Trim() == "-1000" && File.Exists("/usr/bin/choom");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Not permitted here (the process and container boundaries): the host's cgroup limits protect airlockd.
        }
    }
}
