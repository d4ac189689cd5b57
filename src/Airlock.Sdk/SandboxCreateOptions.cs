namespace Airlock.Sdk;

/// <summary>What to ask for when creating a sandbox.</summary>
public sealed record SandboxCreateOptions
{
    /// <summary>Template id; <c>base</c> is the Debian base image.</summary>
    public string Template { get; init; } = "base";

    /// <summary>Risk class: <c>low</c> (process), <c>medium</c> (container) or <c>high</c> (microvm). Null lets airlockd use its default.</summary>
    public string? Risk { get; init; }

    /// <summary>Explicit boundary (<c>process</c>, <c>container</c>, <c>microvm</c>); never weaker than the risk implies unless <see cref="AllowDowngrade"/>.</summary>
    public string? Boundary { get; init; }

    /// <summary>Consent to a weaker boundary than asked for when the asked one is unavailable; the downgrade is reported and audited.</summary>
    public bool AllowDowngrade { get; init; }

    /// <summary>Seconds until airlockd kills the sandbox; null uses the server default.</summary>
    public int? TimeoutSeconds { get; init; }

    /// <summary>Key/value tags to find the sandbox by later.</summary>
    public IReadOnlyDictionary<string, string>? Metadata { get; init; }

    /// <summary>Environment variables for every process in the sandbox.</summary>
    public IReadOnlyDictionary<string, string>? EnvVars { get; init; }

    /// <summary>Memory limit in MiB; null uses the server default.</summary>
    public int? MemoryMB { get; init; }

    /// <summary>CPU count; null uses the server default.</summary>
    public int? CpuCount { get; init; }

    /// <summary>Writable disk in MiB (process and container boundaries: the quota of the sandbox's writable layer); null uses the server default.</summary>
    public int? DiskMB { get; init; }

    /// <summary>microvm only: boot the guest kernel instead of restoring the template's pre-booted snapshot.</summary>
    public bool ColdBoot { get; init; }

    /// <summary>Pause to disk (microvm) instead of being killed when the timeout passes.</summary>
    public bool AutoPause { get; init; }
}

/// <summary>Which sandboxes to list.</summary>
public sealed record SandboxListFilter
{
    /// <summary>Lifecycle state (<c>running</c>, <c>paused</c>...); null lists every state the server lists by default.</summary>
    public string? State { get; init; }

    /// <summary>Only sandboxes carrying all of these metadata pairs.</summary>
    public IReadOnlyDictionary<string, string>? Metadata { get; init; }
}

/// <summary>How to run one command.</summary>
public sealed record RunOptions
{
    /// <summary>Working directory; null uses the user's home.</summary>
    public string? Cwd { get; init; }

    /// <summary>Extra environment variables for this command.</summary>
    public IReadOnlyDictionary<string, string>? Envs { get; init; }

    /// <summary>User to run as; null uses the sandbox user (<c>user</c>).</summary>
    public string? User { get; init; }

    /// <summary>Kill the command (and stop waiting) after this long; null waits until it exits.</summary>
    public TimeSpan? Timeout { get; init; }
}
