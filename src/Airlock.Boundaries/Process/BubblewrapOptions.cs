namespace Airlock.Boundaries.Process;

public sealed record BubblewrapOptions
{
    /// <summary>airlockd's data directory; sandbox state lives under <c>sandboxes/&lt;id&gt;</c>.</summary>
    public required string DataDir { get; init; }

    public string Bwrap { get; init; } = "bwrap";

    /// <summary>Each sandbox runs as host uid/gid <c>UidBase + network index</c>, a uid no host account uses.</summary>
    public int UidBase { get; init; } = 200000;

    public string CgroupRoot { get; init; } = "/sys/fs/cgroup";

    /// <summary>Where the agent listens inside the sandbox (design.md: the fixed sandbox-side address).</summary>
    public int AgentPort { get; init; } = 49983;
}
