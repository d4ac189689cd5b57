namespace Airlock.Boundaries.Container;

public sealed record RuncOptions
{
    /// <summary>airlockd's data directory; sandbox state lives under <c>sandboxes/&lt;id&gt;</c>.</summary>
    public required string DataDir { get; init; }

    /// <summary>
    /// The OCI runtime: "runc", "crun", or "auto" (crun where it proves itself on this host, else runc). Both take the
    /// same command line and bundle.
    /// </summary>
    public string Runtime { get; init; } = "auto";

    /// <summary>The runtime's state directory (<c>--root</c>); on tmpfs so a reboot forgets stale containers.</summary>
    public string StateRoot { get; init; } = "/run/airlock/oci";

    /// <summary>
    /// Root in sandbox number N maps to host id <c>IdBase + N × IdsPerSandbox</c>: ranges no host account and no
    /// other sandbox uses.
    /// </summary>
    public uint IdBase { get; init; } = 1_000_000_000;

    public uint IdsPerSandbox { get; init; } = 65536;

    /// <summary>
    /// null (default): a user namespace wherever the kernel and runtime allow it, else none (and reports say so);
    /// false: never (root in the container is host root, limited by capabilities and seccomp only).
    /// </summary>
    public bool? UserNamespace { get; init; }

    public string CgroupRoot { get; init; } = "/sys/fs/cgroup";

    /// <summary>A static init that reaps orphans as the container's pid 1 (Debian's tini-static).</summary>
    public string Init { get; init; } = "/usr/bin/tini-static";

    /// <summary>Where the agent listens inside the sandbox (design.md: the fixed sandbox-side address).</summary>
    public int AgentPort { get; init; } = 49983;
}
